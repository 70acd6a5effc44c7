//! Results: named metrics with units, printed as a table or as JSON.
//!
//! The JSON shape (one object per run) is what `mqttd-bench compare` reads:
//! `{"scenario", "target", "params": {..}, "metrics": [{"name", "value",
//! "unit", "better"}], "first_error"}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which direction of a metric is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
    /// A count or a setting rather than a score.
    Neither,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    /// A value that is not a number (nothing measured) is written as
    /// JSON null and read back as NaN.
    #[serde(deserialize_with = "null_as_nan")]
    pub value: f64,
    pub unit: String,
    pub better: Better,
}

/// The outcome of one scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub params: Map<String, Value>,
    pub metrics: Vec<Metric>,
    /// The first error met, if any (the count is the `errors` metric).
    pub first_error: Option<String>,
    /// Figures over time (`soak`'s one row per second), if the scenario
    /// keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<Series>,
}

/// A table of figures over time: named columns, one row per sample.
/// Cells are numbers, strings, booleans or null (not measured).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Series {
    /// The column named `name`, cell by cell.
    pub fn column(&self, name: &str) -> Option<impl Iterator<Item = &Value>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(
            self.rows
                .iter()
                .map(move |r| r.get(i).unwrap_or(&Value::Null)),
        )
    }

    /// Right-aligned text columns, headed by the column names.
    pub fn to_text(&self) -> String {
        let cells: Vec<Vec<String>> = std::iter::once(self.columns.clone())
            .chain(self.rows.iter().map(|r| r.iter().map(cell_text).collect()))
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                cells
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(String::len)
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &cells {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            out.push_str(&format!("  {}\n", line.join("  ")));
        }
        out
    }
}

/// A cell as people read it: `-` for not measured, yes/no for booleans.
pub fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), format_value),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Report {
    pub fn new(scenario: &str, target: &str) -> Self {
        Report {
            scenario: scenario.to_string(),
            target: target.to_string(),
            params: Map::new(),
            metrics: Vec::new(),
            first_error: None,
            series: None,
        }
    }

    pub fn param(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.params.insert(name.to_string(), value.into());
        self
    }

    pub fn metric(&mut self, name: &str, value: f64, unit: &str, better: Better) -> &mut Self {
        self.metrics.push(Metric {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            better,
        });
        self
    }

    /// The value of metric `name`, if reported.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.value)
    }

    pub fn render(&self, output: Output) -> String {
        match output {
            Output::Table => self.to_table(),
            Output::Json => self.to_json(),
        }
    }

    pub fn to_json(&self) -> String {
        // A Report holds only strings, finite-or-not floats and maps; f64
        // NaN/inf serialize as null, so this cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A two-column table: parameters first, then metrics.
    pub fn to_table(&self) -> String {
        let mut out = format!("{} against {}\n", self.scenario, self.target);
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        if !params.is_empty() {
            out.push_str(&format!("  {}\n", params.join(" ")));
        }
        let width = self.metrics.iter().map(|m| m.name.len()).max().unwrap_or(0);
        for m in &self.metrics {
            out.push_str(&format!(
                "  {:<width$}  {:>14}  {}\n",
                m.name,
                format_value(m.value),
                m.unit
            ));
        }
        if let Some(e) = &self.first_error {
            out.push_str(&format!("  first error: {e}\n"));
        }
        if let Some(series) = &self.series {
            out.push('\n');
            out.push_str(&series.to_text());
        }
        out
    }
}

/// A number as people read it: integers for large values, two decimals
/// for small ones.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    if v.abs() >= 100.0 || v.fract() == 0.0 {
        group_thousands(v.round() as i64)
    } else {
        format!("{v:.2}")
    }
}

fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut r = Report::new("pubsub", "127.0.0.1:1883");
        r.param("qos", 1).param("mode", "fan-in");
        r.metric("received_per_sec", 123_456.7, "msg/s", Better::Higher);
        r.metric("loss_ratio", 0.0025, "", Better::Lower);
        r
    }

    #[test]
    fn json_shape() {
        let v: Value = serde_json::from_str(&sample().to_json()).unwrap_or_default();
        assert_eq!(v["scenario"], "pubsub");
        assert_eq!(v["target"], "127.0.0.1:1883");
        assert_eq!(v["params"]["qos"], 1);
        assert_eq!(v["params"]["mode"], "fan-in");
        assert_eq!(v["metrics"][0]["name"], "received_per_sec");
        assert_eq!(v["metrics"][0]["value"], 123_456.7);
        assert_eq!(v["metrics"][0]["unit"], "msg/s");
        assert_eq!(v["metrics"][0]["better"], "higher");
        assert_eq!(v["metrics"][1]["better"], "lower");
        assert!(v["first_error"].is_null());
    }

    #[test]
    fn json_round_trip() {
        let r = sample();
        let back: Result<Report, _> = serde_json::from_str(&r.to_json());
        assert_eq!(back.ok(), Some(r));
    }

    #[test]
    fn table_lists_params_and_metrics() {
        let t = sample().to_table();
        assert!(t.starts_with("pubsub against 127.0.0.1:1883\n"), "{t}");
        assert!(t.contains("mode=fan-in qos=1"), "{t}");
        assert!(t.contains("123,457  msg/s"), "{t}");
        assert!(t.contains("0.00"), "{t}");
    }

    #[test]
    fn not_measured_reads_back_as_nan() {
        let mut r = sample();
        r.metric("stuck_dropped_at_secs", f64::NAN, "s", Better::Neither);
        let back: Result<Report, _> = serde_json::from_str(&r.to_json());
        let back = back.map_err(|e| e.to_string());
        assert!(
            matches!(&back, Ok(b) if b.get("stuck_dropped_at_secs").is_some_and(f64::is_nan)),
            "{back:?}"
        );
    }

    #[test]
    fn series_in_json_and_text() {
        let mut r = sample();
        assert!(!r.to_json().contains("series"), "absent when not kept");
        r.series = Some(Series {
            columns: vec!["t_s".into(), "rss_mb".into(), "stuck".into()],
            rows: vec![
                vec![Value::from(1), Value::from(12.5), Value::Bool(true)],
                vec![Value::from(2), Value::Null, Value::Bool(false)],
            ],
        });
        let back: Result<Report, _> = serde_json::from_str(&r.to_json());
        assert_eq!(back.ok().as_ref(), Some(&r));
        let t = r.to_table();
        assert!(t.contains("  t_s  rss_mb  stuck\n"), "{t}");
        assert!(t.contains("    1   12.50    yes\n"), "{t}");
        assert!(t.contains("    2       -     no\n"), "{t}");
        let rss: Vec<&Value> = r
            .series
            .as_ref()
            .and_then(|s| s.column("rss_mb"))
            .map(|c| c.collect())
            .unwrap_or_default();
        assert_eq!(rss, [&Value::from(12.5), &Value::Null]);
    }

    #[test]
    fn value_formatting() {
        assert_eq!(format_value(1_234_567.4), "1,234,567");
        assert_eq!(format_value(-1500.0), "-1,500");
        assert_eq!(format_value(12.345), "12.35");
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(f64::NAN), "-");
        assert_eq!(sample().get("loss_ratio"), Some(0.0025));
        assert_eq!(sample().get("nope"), None);
    }
}
