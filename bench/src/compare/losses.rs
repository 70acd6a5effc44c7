//! The messages a broker failed to deliver, per case: what the report
//! shows first, so that a throughput figure bought by dropping messages
//! (rumqttd drops a subscriber's backlog once it falls out of the topic's
//! in-memory log) is never read as a plain win.

use super::Results;
use crate::report::Report;

/// One broker's losses in one case.
#[derive(Debug, Clone, PartialEq)]
pub struct Loss {
    pub case: String,
    pub broker: String,
    /// Messages the publishers wrote.
    pub sent: f64,
    /// Deliveries expected: sent × subscribers.
    pub expected: f64,
    /// Unique messages the subscribers received.
    pub received: f64,
    pub lost: f64,
}

impl Loss {
    /// Lost deliveries as a fraction of those expected.
    pub fn ratio(&self) -> f64 {
        if self.expected > 0.0 {
            self.lost / self.expected
        } else {
            0.0
        }
    }
}

/// `report`'s losses, if it counted any (message-flow scenarios only).
pub fn of(case: &str, broker: &str, report: &Report) -> Option<Loss> {
    let lost = report.get("lost").filter(|&l| l > 0.0)?;
    let received = report.get("received").unwrap_or(0.0);
    Some(Loss {
        case: case.to_string(),
        broker: broker.to_string(),
        sent: report.get("sent").unwrap_or(0.0),
        // lost = sent × subscribers − unique received.
        expected: received + lost,
        received,
        lost,
    })
}

/// Every loss of the run, in `cases` order, brokers in column order.
pub fn all(results: &Results, cases: &[String], brokers: &[&str]) -> Vec<Loss> {
    cases
        .iter()
        .flat_map(|case| {
            brokers.iter().filter_map(move |broker| {
                results.get(case, broker).and_then(|r| of(case, broker, r))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    fn flow(sent: f64, received: f64, lost: f64) -> Report {
        let mut r = Report::new("pubsub", "x");
        r.metric("sent", sent, "msg", Better::Neither)
            .metric("received", received, "msg", Better::Neither)
            .metric("lost", lost, "msg", Better::Lower);
        r
    }

    #[test]
    fn only_reports_that_lost_something() {
        assert_eq!(of("c", "b", &flow(10.0, 10.0, 0.0)), None);
        assert_eq!(of("c", "b", &Report::new("conn", "x")), None);
        // Fan-out to 4: 100 sent, 400 expected, 300 received.
        let l = of("c", "rumqttd", &flow(100.0, 300.0, 100.0));
        assert_eq!(l.as_ref().map(|l| l.expected), Some(400.0));
        assert_eq!(l.map(|l| l.ratio()), Some(0.25));
    }

    #[test]
    fn all_in_case_and_broker_order() {
        let mut results = Results::default();
        results.insert("b-case", "rumqttd", flow(10.0, 5.0, 5.0));
        results.insert("a-case", "rumqttd", flow(10.0, 9.0, 1.0));
        results.insert("a-case", "mqttd", flow(10.0, 8.0, 2.0));
        results.insert("a-case", "mosquitto", flow(10.0, 10.0, 0.0));
        let cases = vec!["a-case".to_string(), "b-case".to_string()];
        let got: Vec<(String, String)> = all(&results, &cases, &["mqttd", "mosquitto", "rumqttd"])
            .into_iter()
            .map(|l| (l.case, l.broker))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a-case".into(), "mqttd".into()),
                ("a-case".into(), "rumqttd".into()),
                ("b-case".into(), "rumqttd".into()),
            ]
        );
    }
}
