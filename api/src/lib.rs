//! Control API types shared by `mqttd` and `mqttctl`.
