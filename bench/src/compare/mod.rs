//! `compare`: BENCHMARKS.md from the JSON results of one
//! `scripts/bench-compare.sh` run, mqttd and Mosquitto side by side.
//!
//! - `machine`: what the run ran on;
//! - `targets`: the targets and their verdicts;
//! - `render`: the Markdown.

mod machine;
mod render;
mod targets;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::report::Report;

/// Write BENCHMARKS.md from a results directory holding CASE.BROKER.json
/// files (BROKER: mqttd or mosquitto), as produced by
/// scripts/bench-compare.sh.
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

/// Results by case, then by broker.
#[derive(Debug, Default)]
pub struct Results {
    cases: BTreeMap<String, BTreeMap<String, Report>>,
}

impl Results {
    pub fn insert(&mut self, case: &str, broker: &str, report: Report) {
        self.cases
            .entry(case.to_string())
            .or_default()
            .insert(broker.to_string(), report);
    }

    pub fn get(&self, case: &str, broker: &str) -> Option<&Report> {
        self.cases.get(case)?.get(broker)
    }

    pub fn value(&self, case: &str, broker: &str, metric: &str) -> Option<f64> {
        self.get(case, broker)?.get(metric)
    }

    pub fn case_names(&self) -> impl Iterator<Item = &str> {
        self.cases.keys().map(String::as_str)
    }

    /// Reads every `CASE.BROKER.json` of `dir`.
    pub fn load(dir: &Path) -> anyhow::Result<Results> {
        let mut results = Results::default();
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let Some((case, broker)) = split_name(&path) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let report: Report = serde_json::from_str(&text)
                .with_context(|| format!("{} is not an mqttd-bench JSON report", path.display()))?;
            results.insert(&case, &broker, report);
        }
        Ok(results)
    }
}

/// `conn-plain.mqttd.json` → ("conn-plain", "mqttd").
fn split_name(path: &Path) -> Option<(String, String)> {
    let name = path.file_name()?.to_str()?.strip_suffix(".json")?;
    let (case, broker) = name.rsplit_once('.')?;
    Some((case.to_string(), broker.to_string()))
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
            Some(("conn-plain".into(), "mqttd".into()))
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
    }
}
