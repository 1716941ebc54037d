//! gix's progress tree, reduced to what a backup shows of a fetch: the objects of the pack
//! being received, counted as gix-pack indexes them (its "indexing" step, whose total is the
//! object count of the pack's header). Every other step of gix's tree is kept but not shown.
//! gix runs this on its own threads and wants `'static` nodes, so the nodes only share
//! counters; a thread of the caller's reads them (`relay`) and tells the caller's `Progress`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gix::progress::{Count, Id, MessageLevel, NestedProgress, Progress, Step, StepShared, Unit};

use crate::progress::{Progress as Watch, Unit as WatchUnit};

/// gix-pack's id of the step counting a received pack's objects
/// (`gix_pack::index::write::ProgressId::IndexObjects`).
const INDEX_OBJECTS: Id = *b"IWIO";

/// How often the counters are passed on: the display draws no faster anyway.
const RELAY_INTERVAL: Duration = Duration::from_millis(100);

/// The objects counter of the pack being received, once gix has started it, and its total.
type ObjectsCounter = Option<(StepShared, Step)>;

/// A node of gix's progress tree.
pub(super) struct Tap {
    id: Id,
    name: Option<String>,
    counter: StepShared,
    objects: Arc<Mutex<ObjectsCounter>>,
}

/// Reads what the tree's nodes counted.
pub(super) struct Relay {
    objects: Arc<Mutex<ObjectsCounter>>,
}

impl Tap {
    /// The root of a tree for gix, and what reads it.
    pub(super) fn root() -> (Tap, Relay) {
        let objects = Arc::new(Mutex::new(None));
        let root = Tap {
            id: gix::progress::UNKNOWN,
            name: None,
            counter: Arc::new(AtomicUsize::new(0)),
            objects: Arc::clone(&objects),
        };
        (root, Relay { objects })
    }

    fn child(&self, name: String, id: Id) -> Tap {
        Tap {
            id,
            name: Some(name),
            counter: Arc::new(AtomicUsize::new(0)),
            objects: Arc::clone(&self.objects),
        }
    }
}

impl Relay {
    /// Passes the objects counter on to `job` of `watch` until `finished` is set; the
    /// fetch runs meanwhile on another thread.
    pub(super) fn run(&self, (job, watch): (&str, &dyn Watch), finished: &AtomicBool) {
        let mut shown: Option<(Step, Step)> = None;
        loop {
            let done = finished.load(Ordering::SeqCst);
            let current = self.objects.lock().ok().and_then(|o| {
                o.as_ref()
                    .map(|(c, total)| (c.load(Ordering::Relaxed), *total))
            });
            if let Some((count, total)) = current {
                let before = match shown {
                    Some((before, t)) if t == total => before,
                    _ => {
                        watch.phase(job, "fetch", Some(total as u64), WatchUnit::Objects);
                        0
                    }
                };
                watch.advance(job, count.saturating_sub(before) as u64);
                shown = Some((count.max(before), total));
            }
            if done {
                return;
            }
            std::thread::sleep(RELAY_INTERVAL);
        }
    }
}

impl Count for Tap {
    fn set(&self, step: Step) {
        self.counter.store(step, Ordering::Relaxed);
    }

    fn step(&self) -> Step {
        self.counter.load(Ordering::Relaxed)
    }

    fn inc_by(&self, step: Step) {
        self.counter.fetch_add(step, Ordering::Relaxed);
    }

    fn counter(&self) -> StepShared {
        Arc::clone(&self.counter)
    }
}

impl Progress for Tap {
    fn init(&mut self, max: Option<Step>, _unit: Option<Unit>) {
        if self.id == INDEX_OBJECTS
            && let (Some(total), Ok(mut objects)) = (max, self.objects.lock())
        {
            *objects = Some((Arc::clone(&self.counter), total));
        }
    }

    fn set_name(&mut self, name: String) {
        self.name = Some(name);
    }

    fn name(&self) -> Option<String> {
        self.name.clone()
    }

    fn id(&self) -> Id {
        self.id
    }

    // gix's messages say nothing a backup's user needs; errors come back as errors.
    fn message(&self, _level: MessageLevel, _message: String) {}
}

impl NestedProgress for Tap {
    type SubProgress = Tap;

    fn add_child(&mut self, name: impl Into<String>) -> Tap {
        self.child(name.into(), gix::progress::UNKNOWN)
    }

    fn add_child_with_id(&mut self, name: impl Into<String>, id: Id) -> Tap {
        self.child(name.into(), id)
    }
}
