//! Progress on stderr while a scenario runs: a spinner whose message is
//! refreshed from the scenario's counters a few times a second.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// How often the progress line is refreshed.
const REFRESH: Duration = Duration::from_millis(250);

/// A running progress line; [`Progress::finish`] clears it.
pub struct Progress {
    bar: ProgressBar,
    refresher: JoinHandle<()>,
}

impl Progress {
    /// Shows `label` followed by `describe()`; hidden when `quiet` or when
    /// stderr is not a terminal.
    pub fn start(label: &str, quiet: bool, describe: impl Fn() -> String + Send + 'static) -> Self {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(label.to_string());
        let b = bar.clone();
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH);
            loop {
                tick.tick().await;
                b.set_message(describe());
                b.tick();
            }
        });
        Progress { bar, refresher }
    }

    pub fn finish(self) {
        self.refresher.abort();
        self.bar.finish_and_clear();
    }
}
