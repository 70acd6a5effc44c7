//! `compare`: BENCHMARKS.md from the results of one
//! `scripts/bench-compare.sh` run, mqttd, Mosquitto and rumqttd side by
//! side.
//!
//! - `machine`: what the run ran on;
//! - `targets`: the targets and their verdicts;
//! - `losses`: the messages each broker failed to deliver;
//! - `render`: the Markdown.

mod losses;
mod machine;
mod render;
mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::report::Report;

/// The brokers compared, in column order: (file name part, display name).
/// Ratios are mqttd's figure over each of the others.
pub const BROKERS: [(&str, &str); 3] = [
    ("mqttd", "mqttd"),
    ("mosquitto", "Mosquitto"),
    ("rumqttd", "rumqttd"),
];

/// Write BENCHMARKS.md from a results directory holding CASE.BROKER.json
/// files (BROKER: mqttd, mosquitto or rumqttd), as produced by
/// scripts/bench-compare.sh. A CASE.BROKER.skipped or CASE.BROKER.failed
/// text file says why a broker has no result for a case.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of CASE.BROKER.json result files.
    #[arg(long, value_name = "DIR")]
    pub results: PathBuf,
    /// Markdown file to write.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// mqttd's version (git revision).
    #[arg(long, default_value = "unknown")]
    pub mqttd_version: String,
    /// Mosquitto's version.
    #[arg(long, default_value = "unknown")]
    pub mosquitto_version: String,
    /// rumqttd's version.
    #[arg(long, default_value = "unknown")]
    pub rumqttd_version: String,
    /// How the run was made (e.g. "full" or "quick").
    #[arg(long, default_value = "full")]
    pub mode: String,
    /// When the run was made.
    #[arg(long, default_value = "")]
    pub date: String,
    /// Markdown describing both brokers' settings, included as is.
    #[arg(long, value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// Further Markdown notes (limits met on this machine), included as is.
    #[arg(long, value_name = "FILE")]
    pub notes: Option<PathBuf>,
}

/// Why a broker has no result for a case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Absence {
    /// The case was not run against this broker (it lacks what the case
    /// needs).
    Skipped(String),
    /// The run failed.
    Failed(String),
}

/// Results by case, then by broker, and the reasons for missing ones.
#[derive(Debug, Default)]
pub struct Results {
    cases: BTreeMap<String, BTreeMap<String, Report>>,
    absent: BTreeMap<String, BTreeMap<String, Absence>>,
}

impl Results {
    pub fn insert(&mut self, case: &str, broker: &str, report: Report) {
        self.cases
            .entry(case.to_string())
            .or_default()
            .insert(broker.to_string(), report);
    }

    pub fn insert_absence(&mut self, case: &str, broker: &str, absence: Absence) {
        self.absent
            .entry(case.to_string())
            .or_default()
            .insert(broker.to_string(), absence);
    }

    pub fn get(&self, case: &str, broker: &str) -> Option<&Report> {
        self.cases.get(case)?.get(broker)
    }

    /// Every broker the run said has no result for `case`, with the reason.
    pub fn absences(&self, case: &str) -> impl Iterator<Item = (&str, &Absence)> {
        self.absent
            .get(case)
            .into_iter()
            .flat_map(|m| m.iter().map(|(b, a)| (b.as_str(), a)))
    }

    /// Why `broker` has no result for `case`, if the run said.
    pub fn absence(&self, case: &str, broker: &str) -> Option<&Absence> {
        self.absent.get(case)?.get(broker)
    }

    pub fn value(&self, case: &str, broker: &str, metric: &str) -> Option<f64> {
        self.get(case, broker)?.get(metric)
    }

    /// Every case with a result or a reason for its absence, by name.
    pub fn case_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .cases
            .keys()
            .chain(self.absent.keys())
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Reads every `CASE.BROKER.json`, `CASE.BROKER.skipped` and
    /// `CASE.BROKER.failed` of `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Results> {
        let mut results = Results::default();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some((case, broker, kind)) = split_name(&path) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            match kind {
                FileKind::Report => {
                    let report: Report = serde_json::from_str(&text).with_context(|| {
                        format!("{} is not an mqttd-bench JSON report", path.display())
                    })?;
                    results.insert(&case, &broker, report);
                }
                FileKind::Skipped => {
                    results.insert_absence(&case, &broker, Absence::Skipped(one_line(&text)));
                }
                FileKind::Failed => {
                    results.insert_absence(&case, &broker, Absence::Failed(one_line(&text)));
                }
            }
        }
        Ok(results)
    }
}

/// What a file of the results directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Report,
    Skipped,
    Failed,
}

/// `conn-plain.mqttd.json` → ("conn-plain", "mqttd", Report).
fn split_name(path: &Path) -> Option<(String, String, FileKind)> {
    let name = path.file_name()?.to_str()?;
    let (name, kind) = [
        (".json", FileKind::Report),
        (".skipped", FileKind::Skipped),
        (".failed", FileKind::Failed),
    ]
    .into_iter()
    .find_map(|(ext, kind)| Some((name.strip_suffix(ext)?, kind)))?;
    let (case, broker) = name.rsplit_once('.')?;
    Some((case.to_string(), broker.to_string(), kind))
}

/// A reason as one line of Markdown text.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let results = Results::load(&args.results)?;
    let read_opt = |p: &Option<PathBuf>| -> anyhow::Result<Option<String>> {
        p.as_ref()
            .map(|p| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            })
            .transpose()
    };
    let doc = render::Document {
        machine: machine::this_machine(),
        mqttd_version: args.mqttd_version.clone(),
        mosquitto_version: args.mosquitto_version.clone(),
        rumqttd_version: args.rumqttd_version.clone(),
        mode: args.mode.clone(),
        date: args.date.clone(),
        settings: read_opt(&args.settings)?,
        notes: read_opt(&args.notes)?,
    };
    let text = render::render(&doc, &results);
    std::fs::write(&args.out, text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    #[test]
    fn file_names() {
        assert_eq!(
            split_name(Path::new("/r/conn-plain.mqttd.json")),
            Some(("conn-plain".into(), "mqttd".into(), FileKind::Report))
        );
        assert_eq!(
            split_name(Path::new("/r/conn-tls.rumqttd.skipped")),
            Some(("conn-tls".into(), "rumqttd".into(), FileKind::Skipped))
        );
        assert_eq!(
            split_name(Path::new("/r/idle.mosquitto.failed")),
            Some(("idle".into(), "mosquitto".into(), FileKind::Failed))
        );
        assert_eq!(split_name(Path::new("/r/notes.md")), None);
        assert_eq!(split_name(Path::new("/r/x.json")), None);
    }

    #[test]
    fn loads_a_results_directory() {
        let dir = std::env::temp_dir().join(format!("mqttd-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Report::new("conn", "127.0.0.1:1");
        r.metric("connections_per_sec", 5.0, "conn/s", Better::Higher);
        std::fs::write(dir.join("conn-plain.mosquitto.json"), r.to_json()).unwrap();
        std::fs::write(dir.join("README.txt"), "not a result").unwrap();
        std::fs::write(
            dir.join("conn-tls.rumqttd.skipped"),
            "no TLS\nlistener here\n",
        )
        .unwrap();
        let loaded = Results::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!(
            loaded.value("conn-plain", "mosquitto", "connections_per_sec"),
            Some(5.0)
        );
        assert_eq!(
            loaded.value("conn-plain", "mqttd", "connections_per_sec"),
            None
        );
        assert_eq!(
            loaded.absence("conn-tls", "rumqttd"),
            Some(&Absence::Skipped("no TLS listener here".into()))
        );
        assert_eq!(loaded.case_names(), vec!["conn-plain", "conn-tls"]);
    }
}
