//! A damaged store, on the real binary: a session, queued messages and a
//! retained message are stored, the broker is stopped (SIGTERM), the
//! store is damaged, and the broker started again.
//!
//! A damaged store never stops the broker: it starts, keeps what it can
//! read, and whatever it moved aside is under `data_dir/quarantine/`,
//! named in its log and counted by `mqttd_store_quarantined_total`. A
//! store of a newer format is refused (exit code 3) and left in place.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rand::{RngCore, SeedableRng};

use common::process::{quarantined, Mqttd, Spec, Started};
use common::wire::{self, Conn, Incoming, DISCONNECT, PINGREQ, PINGRESP, PUBACK, PUBLISH, SUBACK};

const QUEUED: usize = 3;

struct Store {
    tmp: tempfile::TempDir,
    data: PathBuf,
}

impl Store {
    fn spec(&self) -> Spec<'_> {
        Spec {
            dir: self.tmp.path(),
            data_dir: &self.data,
            durability: Some("batched"),
            extra_yaml: "",
            log_level: "info",
        }
    }

    fn engine(&self) -> PathBuf {
        self.data.join("store")
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A data directory holding the session `keeper` (subscribed to `t/#`)
/// with [`QUEUED`] messages queued, and the retained `r/kept`; the broker
/// stopped cleanly.
fn populated() -> Store {
    populate(Stop::Term)
}

/// How the populating broker ends.
#[derive(PartialEq)]
enum Stop {
    /// SIGTERM: a clean stop flushes everything into table files.
    Term,
    /// SIGKILL: everything is left in the journal only.
    Kill,
}

fn populate(stop: Stop) -> Store {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let s = Store { tmp, data };
    let broker = Mqttd::start(&s.spec()).running();
    runtime().block_on(async {
        let addr = broker.mqtt;
        let (mut keeper, _) = Conn::open(addr, &wire::connect("keeper", false))
            .await
            .expect("connect");
        keeper
            .send(&wire::subscribe(1, "t/#", 1))
            .await
            .expect("send");
        keeper.expect(SUBACK).await.expect("SUBACK");
        keeper.send(&DISCONNECT).await.expect("send");
        assert!(keeper.read().await.expect("read").is_none(), "closed");
        let (mut p, _) = Conn::open(addr, &wire::connect("publisher", true))
            .await
            .expect("connect");
        for i in 0..QUEUED {
            let payload = format!("m{i}");
            p.send(&wire::publish(
                "t/q",
                1,
                false,
                false,
                1,
                payload.as_bytes(),
            ))
            .await
            .expect("send");
            p.expect(PUBACK).await.expect("PUBACK");
        }
        p.send(&wire::publish("r/kept", 1, true, false, 1, b"kept"))
            .await
            .expect("send");
        p.expect(PUBACK).await.expect("PUBACK");
        p.send(&DISCONNECT).await.expect("send");
    });
    if stop == Stop::Kill {
        broker.kill();
        return s;
    }
    let (status, log) = broker.terminate();
    assert!(status.success(), "{status}:\n{log}");
    s
}

/// What a restarted broker kept.
#[derive(Debug, PartialEq, Eq)]
struct Kept {
    session: bool,
    queued: Vec<String>,
    retained: Vec<String>,
}

/// Reads packets until PINGRESP (asked for after `first` arrived),
/// returning the PUBLISH payloads.
async fn until_pingresp(c: &mut Conn, first: Option<u8>) -> Vec<String> {
    let mut got = Vec::new();
    if first.is_none() {
        c.send(&PINGREQ).await.expect("send");
    }
    loop {
        let f = tokio::time::timeout(common::WAIT, c.read())
            .await
            .expect("answer in time")
            .expect("read")
            .expect("open");
        match f.kind() {
            PUBLISH => {
                let p = Incoming::parse(&f);
                if let Some(id) = p.id {
                    c.send(&wire::ack(PUBACK, id)).await.expect("send");
                }
                got.push(String::from_utf8_lossy(&p.payload).into_owned());
            }
            PINGRESP => return got,
            k if Some(k) == first => c.send(&PINGREQ).await.expect("send"),
            _ => {}
        }
    }
}

fn kept(broker: &Mqttd) -> Kept {
    runtime().block_on(async {
        // Resent messages follow the CONNACK; a PINGRESP comes after them.
        let (mut keeper, session) = Conn::open(broker.mqtt, &wire::connect("keeper", false))
            .await
            .expect("connect");
        let queued = until_pingresp(&mut keeper, None).await;
        keeper.send(&DISCONNECT).await.expect("send");
        // Retained messages follow the SUBACK.
        let (mut c, _) = Conn::open(broker.mqtt, &wire::connect("reader", true))
            .await
            .expect("connect");
        c.send(&wire::subscribe(1, "r/#", 0)).await.expect("send");
        let retained = until_pingresp(&mut c, Some(SUBACK)).await;
        c.send(&DISCONNECT).await.expect("send");
        Kept {
            session,
            queued,
            retained,
        }
    })
}

fn everything() -> Kept {
    Kept {
        session: true,
        queued: (0..QUEUED).map(|i| format!("m{i}")).collect(),
        retained: vec!["kept".into()],
    }
}

fn nothing() -> Kept {
    Kept {
        session: false,
        queued: Vec::new(),
        retained: Vec::new(),
    }
}

fn garbage(len: usize) -> Vec<u8> {
    let mut g = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(0x006d_7174_7464).fill_bytes(&mut g);
    g
}

/// The journal file with the highest number.
fn newest_journal(engine: &Path) -> PathBuf {
    let mut journals: Vec<(u64, PathBuf)> = std::fs::read_dir(engine)
        .expect("store dir")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let id = path
                .file_name()?
                .to_str()?
                .strip_suffix(".jnl")?
                .parse()
                .ok()?;
            Some((id, path))
        })
        .collect();
    journals.sort();
    journals.pop().expect("a journal").1
}

/// Where the journal's entries end: fjall preallocates the file with
/// zeros, so the last non-zero byte ends the last entry.
fn journal_data_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).expect("read journal");
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1)
}

fn write_at(path: &Path, at: SeekFrom, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open");
    f.seek(at).expect("seek");
    f.write_all(bytes).expect("write");
}

/// What a restart on a damaged store showed.
struct Outcome {
    kept: Kept,
    quarantine: Vec<PathBuf>,
    metric: f64,
    log: String,
}

fn restart(s: &Store) -> Outcome {
    let broker = match Mqttd::start(&s.spec()) {
        Started::Running(b) => b,
        Started::Exited { status, log } => panic!("refused to start ({status}):\n{log}"),
    };
    let kept = kept(&broker);
    let metric = broker
        .metric("mqttd_store_quarantined_total")
        .expect("quarantine metric");
    let (status, log) = broker.terminate();
    assert!(status.success(), "{status}:\n{log}");
    Outcome {
        kept,
        quarantine: quarantined(&s.data),
        metric,
        log,
    }
}

impl Outcome {
    /// Nothing moved aside, nothing counted.
    fn nothing_quarantined(&self) {
        assert!(self.quarantine.is_empty(), "{:?}", self.quarantine);
        assert_eq!(self.metric, 0.0);
    }

    /// Something was moved aside: the one quarantine directory exists,
    /// holds `what`, the log names it, and the metric counts `count`.
    fn quarantined(&self, what: &str, count: f64) {
        assert_eq!(self.quarantine.len(), 1, "{:?}", self.quarantine);
        let q = &self.quarantine[0];
        assert!(q.join(what).exists(), "{} in {}", what, q.display());
        assert!(
            self.log.contains(&q.display().to_string()),
            "the log names {}:\n{}",
            q.display(),
            self.log
        );
        assert_eq!(self.metric, count);
    }
}

fn report(case: &str, o: &Outcome) {
    let errors: Vec<&str> = o
        .log
        .lines()
        .filter(|l| l.contains("\"ERROR\"") || l.contains("\"WARN\""))
        .collect();
    eprintln!(
        "damaged store, {case}: kept {:?}; quarantine {:?}; metric {}; warnings and errors:\n  {}",
        o.kept,
        o.quarantine,
        o.metric,
        errors.join("\n  ")
    );
}

/// (a) Garbage appended to the newest journal file, past fjall's
/// preallocated zeros (journals are created 64 MiB long): recovery stops
/// at the first zero and cuts the file there, silently.
#[test]
fn garbage_after_the_journal_file_is_dropped_silently() {
    let s = populated();
    let journal = newest_journal(&s.engine());
    write_at(&journal, SeekFrom::End(0), &garbage(4096));
    let o = restart(&s);
    report("garbage appended to the journal file", &o);
    assert_eq!(o.kept, everything());
    o.nothing_quarantined();
}

/// (a) Garbage right after the journal's last entry (where the next
/// write would have gone): not a valid batch, so fjall cuts the journal
/// at the last whole batch, silently; everything is kept.
#[test]
fn garbage_after_the_last_journal_entry_is_dropped_silently() {
    let s = populated();
    let journal = newest_journal(&s.engine());
    let end = journal_data_end(&journal);
    write_at(&journal, SeekFrom::Start(end), &garbage(4096));
    let o = restart(&s);
    report("garbage after the last journal entry", &o);
    assert_eq!(o.kept, everything());
    o.nothing_quarantined();
}

/// (b) The newest journal cut in the middle of its last entry, as a
/// torn write leaves it (the broker was killed, so the journal holds
/// everything): fjall drops the incomplete batch (the retained message,
/// the last write) and keeps every batch before it, silently (nothing is
/// logged above debug level, nothing quarantined).
#[test]
fn journal_truncated_mid_record_loses_only_the_torn_batch() {
    let s = populate(Stop::Kill);
    let journal = newest_journal(&s.engine());
    let end = journal_data_end(&journal);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .expect("open");
    f.set_len(end - 5).expect("truncate");
    drop(f);
    let o = restart(&s);
    report("journal truncated mid-record", &o);
    let mut want = everything();
    want.retained.clear();
    assert_eq!(o.kept, want);
    o.nothing_quarantined();
}

/// Flushes every keyspace's memtable into a table file (the broker's
/// short life leaves everything in the journal), with the engine the
/// broker links; returns the table files of keyspace `name`.
fn flush_tables(engine: &Path, name: &str) -> Vec<PathBuf> {
    let db = fjall::Database::builder(engine).open().expect("open store");
    let mut path = None;
    for ks_name in db.list_keyspace_names() {
        let ks_name: &str = &ks_name;
        let ks = db
            .keyspace(ks_name, fjall::KeyspaceCreateOptions::default)
            .expect("keyspace");
        ks.rotate_memtable_and_wait().expect("flush");
        if ks_name == name {
            path = Some(ks.path().to_path_buf());
        }
    }
    db.persist(fjall::PersistMode::SyncAll).expect("persist");
    drop(db);
    let tables = path.expect("keyspace").join("tables");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&tables)
        .expect("tables dir")
        .filter_map(|e| Some(e.ok()?.path()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{name} has a table");
    files
}

/// (c) A table file (of the `retained` keyspace) cut in half: fjall
/// refuses to open the database (`Storage(Unrecoverable)`), so the whole
/// store is moved aside and the broker starts empty: the sessions, in
/// other keyspaces, are lost with it (they are in the quarantined copy).
#[test]
fn truncated_table_file_quarantines_the_store() {
    let s = populated();
    for t in flush_tables(&s.engine(), "retained") {
        let len = std::fs::metadata(&t).expect("stat").len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&t)
            .expect("open");
        f.set_len(len / 2).expect("truncate");
    }
    let o = restart(&s);
    report("table file truncated", &o);
    assert_eq!(o.kept, nothing());
    o.quarantined("store", 1.0);
}

/// (c) A table file overwritten with garbage (same length): as when cut.
#[test]
fn overwritten_table_file_quarantines_the_store() {
    let s = populated();
    for t in flush_tables(&s.engine(), "retained") {
        let len = std::fs::metadata(&t).expect("stat").len() as usize;
        std::fs::write(&t, garbage(len)).expect("write");
    }
    let o = restart(&s);
    report("table file overwritten", &o);
    assert_eq!(o.kept, nothing());
    o.quarantined("store", 1.0);
}

/// (d) The store directory's contents replaced by garbage files: fjall
/// cannot read its version file (`InvalidVersion(None)`); the store is
/// moved aside and the broker starts empty.
#[test]
fn store_of_garbage_is_quarantined() {
    let s = populated();
    let engine = s.engine();
    std::fs::remove_dir_all(&engine).expect("remove");
    std::fs::create_dir_all(engine.join("keyspaces/0")).expect("mkdir");
    for (name, len) in [("version", 4), ("0.jnl", 4096), ("keyspaces/0/current", 25)] {
        std::fs::write(engine.join(name), garbage(len)).expect("write");
    }
    let o = restart(&s);
    report("store replaced by garbage", &o);
    assert_eq!(o.kept, nothing());
    o.quarantined("store", 1.0);
}

/// A record that does not decode (an unknown record version) is written
/// to `quarantine/<stamp>/records.txt` and deleted; the rest is kept.
#[test]
fn undecodable_record_is_quarantined_alone() {
    let s = populated();
    {
        let db = fjall::Database::builder(s.engine())
            .open()
            .expect("open store");
        let retained = db
            .keyspace("retained", fjall::KeyspaceCreateOptions::default)
            .expect("retained keyspace");
        retained.insert("r/bad", [9u8, 9, 9]).expect("insert");
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    let o = restart(&s);
    report("an undecodable record", &o);
    assert_eq!(o.kept, everything());
    o.quarantined("records.txt", 1.0);
    let records = std::fs::read_to_string(o.quarantine[0].join("records.txt")).expect("read");
    assert_eq!(records, format!("retained {} 090909\n", hex(b"r/bad")));
    // Deleted from the store: the next start finds nothing to quarantine
    // (and the queued messages were delivered by the first).
    let again = restart(&s);
    let mut want = everything();
    want.queued.clear();
    assert_eq!(again.kept, want);
    assert_eq!(again.quarantine.len(), 1);
    assert_eq!(again.metric, 0.0);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// (e) A store of a newer format: refused with exit code 3 and a message
/// naming it; left where it is.
#[test]
fn newer_format_is_refused_and_left_in_place() {
    let s = populated();
    let engine = s.engine();
    {
        let db = fjall::Database::builder(&engine)
            .open()
            .expect("open store");
        let meta = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .expect("meta keyspace");
        meta.insert("format", 2u32.to_be_bytes()).expect("insert");
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    let before = newest_journal(&engine);
    let Started::Exited { status, log } = Mqttd::start(&s.spec()) else {
        panic!("a store of a newer format must be refused");
    };
    assert_eq!(status.code(), Some(3), "{log}");
    let path = engine.display().to_string();
    // Printed once: a plain `mqttd: ` line, or the log's ERROR record
    // when the log is on (JSON here).
    let refusal = log
        .lines()
        .find(|l| l.starts_with("mqttd: ") || l.contains("\"level\":\"ERROR\""))
        .unwrap_or_else(|| panic!("a refusal on stderr:\n{log}"));
    assert!(refusal.contains(&path), "{refusal}");
    assert!(refusal.contains("format 2"), "{refusal}");
    assert!(quarantined(&s.data).is_empty());
    assert!(before.exists(), "the store is left in place");
    eprintln!("damaged store, format 2: {refusal}");
}
