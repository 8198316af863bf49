//! Crash images: a real store writes acknowledged writes, then a few more (the ones "in
//! flight" at the crash); images of the directory mix the before and after states the way
//! a power loss can (4 KiB sectors old or new, torn tails at any byte, garbage in sectors
//! holding only unacknowledged bytes, a garbled header of the segment being activated).
//! Recovery must keep every acknowledged write plus a prefix of the unacknowledged ones and
//! must never refuse to open because of them; damage inside acknowledged data of a sealed
//! segment must make open fail with a typed error naming the file.
//!
//! The images follow the writer's ordering guarantees and nothing more: only the segment
//! files written by the in-flight batch differ between "before" and "after", a segment is
//! synced completely before its successor is written, and every other file (spares being
//! prepared, segments being retired) is taken as it was before the in-flight writes.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use mako_logstore::format::{Decoded, HEADER_LEN, HeaderCheck, decode_header, decode_record};
use mako_logstore::{
    Durability, GroupState, GroupWrite, HardState, LogEntry, LogError, LogStore, LogStoreConfig,
};
use rand::{Rng, SeedableRng, rngs::SmallRng};

const SECTOR: usize = 4096;
const SEGMENT: u64 = 32 << 10;
const GROUPS: u32 = 3;

/// The files of a log directory: name → contents.
type Image = BTreeMap<String, Vec<u8>>;

fn snapshot(dir: &Path) -> Image {
    let mut img = Image::new();
    for d in fs::read_dir(dir).expect("read dir") {
        let p = d.expect("dirent").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        // A file that vanished meanwhile (a spare renamed, a segment retired) is skipped.
        if let Ok(data) = fs::read(&p) {
            img.insert(name, data);
        }
    }
    img
}

fn write_image(img: &Image, dir: &Path) {
    for (name, data) in img {
        fs::write(dir.join(name), data).expect("write image file");
    }
}

/// The sequence number in a segment's valid header.
fn valid_seq(data: &[u8]) -> Option<u64> {
    match decode_header(&data[..data.len().min(HEADER_LEN)]) {
        HeaderCheck::Valid(s) => Some(s),
        _ => None,
    }
}

/// Offset after the last complete record of a cleanly written segment.
fn data_end(data: &[u8]) -> usize {
    let mut off = HEADER_LEN;
    while let Ok(Decoded::Record { next, .. }) = decode_record(data, off) {
        off = next;
    }
    off
}

/// What every group should look like after some writes (append-only with compaction).
#[derive(Clone, Default, PartialEq, Debug)]
struct Model {
    groups: BTreeMap<u32, GroupState>,
}

impl Model {
    fn apply(&mut self, writes: &[GroupWrite]) {
        for w in writes {
            let g = self.groups.entry(w.group).or_default();
            g.entries.extend(w.entries.iter().cloned());
            if let Some(hs) = w.hard_state {
                g.hard_state = hs;
            }
            if let Some(c) = w.compact_to {
                g.first_index = g.first_index.max(c);
            }
            let floor = g.first_index;
            g.entries.retain(|e| e.index >= floor);
        }
    }

    fn last(&self, group: u32) -> u64 {
        self.groups
            .get(&group)
            .and_then(|g| g.entries.last())
            .map_or(0, |e| e.index)
    }
}

/// One random write: appends to one or two groups, sometimes a hard state or compaction.
fn random_write(rng: &mut SmallRng, model: &Model, step: u64) -> Vec<GroupWrite> {
    let mut out: Vec<GroupWrite> = Vec::new();
    let mut groups: Vec<u32> = vec![rng.random_range(0..GROUPS)];
    if rng.random_bool(0.2) {
        groups.push((groups[0] + 1) % GROUPS);
    }
    for g in groups {
        let first = model.last(g) + 1;
        let n = rng.random_range(1..4u64);
        let entries = (first..first + n)
            .map(|i| {
                let len = rng.random_range(40..2500usize);
                // Never zero, so no acknowledged sector is all zero.
                let b = (i % 250) as u8 + 1;
                LogEntry::new(i, step, Bytes::from(vec![b; len]))
            })
            .collect();
        let last = first + n - 1;
        out.push(GroupWrite {
            entries,
            hard_state: rng.random_bool(0.3).then_some(HardState {
                term: step,
                vote: u64::from(g) + 1,
                commit: last.saturating_sub(1),
            }),
            compact_to: rng.random_bool(0.15).then(|| last.saturating_sub(6)),
            ..GroupWrite::new(g)
        });
    }
    out
}

/// One step of a run: the directory before and after `writes`, which completed together.
struct Step {
    before: Image,
    after: Image,
    /// Model after the acknowledged writes (those before this step).
    acked: Model,
    /// Models after each additional write of this step, in order.
    then: Vec<Model>,
}

/// Runs a real store and records `steps` steps of 1..=3 writes each.
fn record_run(seed: u64, steps: usize) -> Vec<Step> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogStoreConfig {
        segment_bytes: SEGMENT,
        preallocated_segments: 1,
        ..LogStoreConfig::new(dir.path())
    };
    let (log, _) = LogStore::open(cfg).expect("open");
    let mut model = Model::default();
    let mut out = Vec::new();
    for step in 1..=steps as u64 {
        let before = snapshot(dir.path());
        let acked = model.clone();
        let m = rng.random_range(1..=3usize);
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut then = Vec::new();
        for _ in 0..m {
            let w = random_write(&mut rng, &model, step);
            model.apply(&w);
            then.push(model.clone());
            let tx = tx.clone();
            log.write(
                w,
                Box::new(move |r| {
                    let _ = tx.send(r.is_ok());
                }),
            );
        }
        for _ in 0..m {
            assert!(
                rx.recv_timeout(Duration::from_secs(60))
                    .expect("completion"),
                "write failed"
            );
        }
        out.push(Step {
            before,
            after: snapshot(dir.path()),
            acked,
            then,
        });
    }
    out
}

/// How one crash image is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Every changed 4 KiB sector old or new at random.
    SectorMix,
    /// New bytes up to a random offset, old after it.
    TornTail,
    /// Sector mix, plus random bytes in a sector holding only unacknowledged bytes.
    Garbage,
    /// Sector mix with the first sector of a just-activated segment garbage.
    GarbledHeader,
}

/// A segment file the in-flight batch wrote.
struct InFlight {
    name: String,
    /// Contents before (zeros if it held no data: spares are zero before activation).
    old: Vec<u8>,
    /// Contents after.
    new: Vec<u8>,
    /// First byte that may differ (end of the acknowledged data; 0 if just activated).
    lo: usize,
}

/// The segment files the in-flight batch wrote, in sequence order.
fn in_flight(step: &Step) -> Vec<InFlight> {
    let active = step
        .before
        .values()
        .filter_map(|d| valid_seq(d))
        .max()
        .unwrap_or(0);
    let mut files: Vec<(u64, InFlight)> = Vec::new();
    for (name, new) in &step.after {
        let Some(seq) = valid_seq(new) else { continue };
        if seq < active {
            continue;
        }
        let old = match step.before.get(name) {
            Some(d) if valid_seq(d) == Some(seq) => d.clone(),
            _ => vec![0u8; new.len()],
        };
        if old == *new {
            continue;
        }
        let lo = if valid_seq(&old).is_some() {
            data_end(&old)
        } else {
            0
        };
        files.push((
            seq,
            InFlight {
                name: name.clone(),
                old,
                new: new.clone(),
                lo,
            },
        ));
    }
    files.sort_by_key(|f| f.0);
    files.into_iter().map(|(_, f)| f).collect()
}

/// Builds one crash image of `step`; returns it and whether it is meaningful for `kind`.
fn crash_image(step: &Step, kind: Kind, rng: &mut SmallRng) -> Option<Image> {
    let files = in_flight(step);
    if files.is_empty() {
        return None;
    }
    // A segment is synced before its successor is written: with two files changed, either
    // the newer one is untouched (old) or the older one is complete (new).
    let torn_idx = if files.len() == 1 || rng.random_bool(0.5) {
        files.len() - 1
    } else {
        0
    };
    let activated = files[torn_idx].lo == 0;
    if kind == Kind::GarbledHeader && !activated {
        return None;
    }
    let mut img = step.before.clone();
    for (i, InFlight { name, old, new, lo }) in files.iter().enumerate() {
        let mut data = match i.cmp(&torn_idx) {
            std::cmp::Ordering::Less => new.clone(),
            std::cmp::Ordering::Greater => old.clone(),
            std::cmp::Ordering::Equal => old.clone(),
        };
        if i == torn_idx {
            let hi = (0..new.len())
                .rev()
                .find(|&j| new[j] != old[j])
                .map_or(*lo, |j| j + 1);
            match kind {
                Kind::TornTail => {
                    let cut = rng.random_range(*lo..=hi);
                    data[..cut].copy_from_slice(&new[..cut]);
                }
                Kind::SectorMix | Kind::Garbage | Kind::GarbledHeader => {
                    let mut s = lo / SECTOR * SECTOR;
                    while s < hi {
                        let e = (s + SECTOR).min(data.len());
                        if rng.random_bool(0.5) {
                            data[s..e].copy_from_slice(&new[s..e]);
                        }
                        s = e;
                    }
                }
            }
            if kind == Kind::Garbage {
                // A sector with no acknowledged byte: at or after the old data's end.
                let first = lo.div_ceil(SECTOR);
                let last = hi.div_ceil(SECTOR);
                if first >= last {
                    return None;
                }
                let s = rng.random_range(first..last) * SECTOR;
                let e = (s + SECTOR).min(data.len());
                rng.fill(&mut data[s..e]);
            }
            if kind == Kind::GarbledHeader {
                let e = SECTOR.min(data.len());
                rng.fill(&mut data[..e]);
            }
        }
        img.insert(name.clone(), data);
    }
    Some(img)
}

fn verify_cfg(dir: &Path) -> LogStoreConfig {
    LogStoreConfig {
        segment_bytes: SEGMENT,
        // No spares: opening an image stays cheap.
        preallocated_segments: 0,
        durability: Durability::Buffered,
        ..LogStoreConfig::new(dir)
    }
}

/// Opens the image; the recovered state must be the acknowledged one plus a prefix of the
/// in-flight writes. Returns how many in-flight writes survived.
fn check_image(img: &Image, step: &Step, what: &str) -> usize {
    let dir = tempfile::tempdir().expect("tempdir");
    write_image(img, dir.path());
    let (log, rec) = match LogStore::open(verify_cfg(dir.path())) {
        Ok(x) => x,
        Err(e) => panic!("{what}: refused to open a crash image: {e}"),
    };
    drop(log);
    let got = Model { groups: rec.groups };
    let mut candidates = vec![&step.acked];
    candidates.extend(step.then.iter());
    match candidates.iter().position(|m| **m == got) {
        Some(j) => j,
        None => panic!(
            "{what}: recovered state is not acknowledged + a prefix of the in-flight writes\n\
             got {:?}\nacked {:?}",
            summary(&got),
            summary(&step.acked)
        ),
    }
}

fn summary(m: &Model) -> Vec<(u32, u64, usize, HardState)> {
    m.groups
        .iter()
        .map(|(g, s)| (*g, s.first_index, s.entries.len(), s.hard_state))
        .collect()
}

#[test]
fn crash_images_keep_acknowledged_writes_and_never_refuse() {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut survivors = [0usize; 4];
    for seed in 0..4u64 {
        let steps = record_run(seed, 45);
        let mut rng = SmallRng::seed_from_u64(1000 + seed);
        for (i, step) in steps.iter().enumerate() {
            for kind in [
                Kind::SectorMix,
                Kind::TornTail,
                Kind::Garbage,
                Kind::GarbledHeader,
            ] {
                let Some(img) = crash_image(step, kind, &mut rng) else {
                    continue;
                };
                let what = format!("seed {seed} step {i} {kind:?}");
                let j = check_image(&img, step, &what);
                survivors[j.min(3)] += 1;
                *counts.entry(format!("{kind:?}")).or_default() += 1;
            }
        }
    }
    // The images did exercise every kind, and both outcomes (in-flight writes lost, kept).
    for kind in ["SectorMix", "TornTail", "Garbage", "GarbledHeader"] {
        assert!(
            counts.get(kind).copied().unwrap_or(0) >= 5,
            "{kind}: {counts:?}"
        );
    }
    assert!(survivors[0] > 0 && survivors[1] > 0, "{survivors:?}");
}

#[test]
fn writing_continues_after_recovering_a_crash_image() {
    let steps = record_run(77, 30);
    let mut rng = SmallRng::seed_from_u64(78);
    let mut checked = 0;
    for (i, step) in steps.iter().enumerate() {
        let kind = [Kind::SectorMix, Kind::GarbledHeader][i % 2];
        let Some(img) = crash_image(step, kind, &mut rng) else {
            continue;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        write_image(&img, dir.path());
        let cfg = verify_cfg(dir.path());
        let (log, rec) = LogStore::open(cfg.clone()).expect("open image");
        let mut model = Model { groups: rec.groups };
        // Keep writing well past a segment, then reopen: exactly what was written.
        for k in 0..40u64 {
            let w = random_write(&mut rng, &model, 1000 + k);
            log.write_sync(w.clone()).expect("write after recovery");
            model.apply(&w);
        }
        drop(log);
        let (_log, rec) = LogStore::open(cfg).expect("reopen");
        assert_eq!(Model { groups: rec.groups }, model, "step {i} {kind:?}");
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
}

/// Flips one byte inside acknowledged data of a sealed segment: open must fail with
/// `Corrupt` naming that segment (never a silent truncation), and change nothing.
#[test]
fn damage_in_acknowledged_data_of_a_sealed_segment_refuses_to_open() {
    let steps = record_run(5, 45);
    let mut rng = SmallRng::seed_from_u64(6);
    let mut checked = 0;
    for (i, step) in steps.iter().enumerate() {
        let img = &step.after;
        let mut segs: Vec<(u64, &String, &Vec<u8>)> = img
            .iter()
            .filter_map(|(n, d)| valid_seq(d).map(|s| (s, n, d)))
            .collect();
        segs.sort_by_key(|s| s.0);
        if segs.len() < 2 {
            continue;
        }
        // Any segment but the newest.
        let (_, name, data) = segs[rng.random_range(0..segs.len() - 1)];
        let end = data_end(data);
        let at = rng.random_range(HEADER_LEN..end);
        let mut bad = img.clone();
        let f = bad.get_mut(name).expect("file");
        f[at] ^= 1 << rng.random_range(0..8);
        let dir = tempfile::tempdir().expect("tempdir");
        write_image(&bad, dir.path());
        let cfg = verify_cfg(dir.path());
        let path: PathBuf = dir.path().join(name);
        match LogStore::open(cfg.clone()) {
            Err(LogError::Corrupt {
                path: p, offset, ..
            }) => {
                assert_eq!(p, path, "step {i}");
                assert!(
                    offset as usize >= HEADER_LEN && offset as usize <= at,
                    "step {i}"
                );
            }
            Err(e) => panic!("step {i}: expected Corrupt, got {e}"),
            Ok((_, rec)) => panic!(
                "step {i}: opened a log with a damaged sealed segment: {:?}",
                summary(&Model { groups: rec.groups })
            ),
        }
        assert_eq!(
            snapshot(dir.path()),
            bad,
            "step {i}: a refused open changed files"
        );
        // The explicit repair truncates there; what remains is a prefix of the writes.
        let report = LogStore::repair(&cfg).expect("repair");
        assert_eq!(report.cut.as_ref().map(|c| &c.path), Some(&path));
        let (_log, rec) = LogStore::open(cfg).expect("open after repair");
        // Every surviving entry is the one written at its index (no overwrites here), in a
        // contiguous run. (A cut before a compaction record can leave `first_index` below
        // the first surviving entry: segments reclaimed after that compaction are gone.)
        let written: BTreeMap<(u32, u64), &LogEntry> = steps[..=i]
            .iter()
            .flat_map(|s| s.then.iter())
            .flat_map(|m| m.groups.iter())
            .flat_map(|(g, st)| st.entries.iter().map(move |e| ((*g, e.index), e)))
            .collect();
        for (g, st) in &rec.groups {
            for (k, e) in st.entries.iter().enumerate() {
                assert_eq!(written.get(&(*g, e.index)), Some(&e), "step {i}: group {g}");
                assert_eq!(e.index, st.entries[0].index + k as u64, "step {i}: gap");
            }
        }
        checked += 1;
    }
    assert!(checked >= 10, "{checked}");
}

/// A just-activated successor (torn: header sector unwritten or garbage, later sectors
/// written) proves its predecessor was complete and synced: damage in the predecessor's
/// data is corruption, not a torn tail, and open must refuse.
#[test]
fn a_torn_activation_seals_the_previous_segment() {
    let steps = record_run(9, 60);
    let mut rng = SmallRng::seed_from_u64(10);
    let mut checked = [0usize; 2];
    for (i, step) in steps.iter().enumerate() {
        let files = in_flight(step);
        let Some(InFlight { name, new, .. }) = files.iter().find(|f| f.lo == 0) else {
            continue;
        };
        if new.len() <= SECTOR || new[SECTOR..].iter().all(|&b| b == 0) {
            continue; // nothing written past the header sector
        }
        // The predecessor: the newest segment before the in-flight writes.
        let Some((prev, pdata)) = step
            .before
            .iter()
            .filter_map(|(n, d)| valid_seq(d).map(|s| (s, n, d)))
            .max_by_key(|x| x.0)
            .map(|(_, n, d)| (n.clone(), d.clone()))
        else {
            continue;
        };
        for (k, garble) in [false, true].into_iter().enumerate() {
            let mut img = step.before.clone();
            let mut act = new.clone();
            if garble {
                rng.fill(&mut act[..SECTOR]);
            } else {
                act[..SECTOR].fill(0);
            }
            img.insert(name.clone(), act);
            let at = rng.random_range(HEADER_LEN..data_end(&pdata));
            img.get_mut(&prev).expect("prev")[at] ^= 0x10;
            let dir = tempfile::tempdir().expect("tempdir");
            write_image(&img, dir.path());
            match LogStore::open(verify_cfg(dir.path())) {
                Err(LogError::Corrupt { path, .. }) => {
                    assert_eq!(path, dir.path().join(&prev), "step {i}")
                }
                Err(e) => panic!("step {i} garble={garble}: expected Corrupt, got {e}"),
                Ok(_) => panic!(
                    "step {i} garble={garble}: damage before a written successor was cut silently"
                ),
            }
            checked[k] += 1;
        }
    }
    assert!(checked[0] >= 2 && checked[1] >= 2, "{checked:?}");
}
