//! The one work queue of a backup run: URL lists, a source's repositories and a repository's
//! LFS downloads all hand out their items to a few scoped threads in order, and get the
//! results back in item order whatever order they finished in.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Runs `job` on every item, on up to `threads` threads (never more than there are items).
/// Each thread first makes its own state with `start` (an API client, say); a thread whose
/// `start` gives `None` takes no work and the others share the items. `job` is called once per
/// item with the thread's state and the item's index; whatever it must tell as work completes
/// (progress, live lines) it tells itself.
///
/// Returns the results in item order, and every started thread's final state. Items no
/// thread took (every `start` failed) have no result, so fewer results than items means some
/// work was never done.
pub(super) fn in_parallel<T, S, R>(
    items: &[T],
    threads: usize,
    start: impl Fn() -> Option<S> + Sync,
    job: impl Fn(&mut S, usize, &T) -> R + Sync,
) -> (Vec<R>, Vec<S>)
where
    T: Sync,
    S: Send,
    R: Send,
{
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    let states: Mutex<Vec<S>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                let Some(mut state) = start() else { return };
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let result = job(&mut state, i, item);
                    lock(&results).push((i, result));
                }
                lock(&states).push(state);
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    let states = states.into_inner().unwrap_or_else(|e| e.into_inner());
    (results.into_iter().map(|(_, r)| r).collect(), states)
}

/// A job that panicked has no result to hand over; the others' are kept.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_item_order() {
        let items: Vec<u64> = (0..50).collect();
        let (results, states) = in_parallel(
            &items,
            4,
            || Some(0usize),
            |done, i, item| {
                // Later items finish first.
                std::thread::sleep(std::time::Duration::from_micros(50 - item));
                *done += 1;
                (i, item * 2)
            },
        );
        assert_eq!(
            results,
            (0..50).map(|i| (i as usize, i * 2)).collect::<Vec<_>>()
        );
        assert_eq!(states.iter().sum::<usize>(), 50);
    }

    #[test]
    fn threads_that_cannot_start_leave_the_work_to_the_others() {
        let items = [1, 2, 3];
        let started = AtomicUsize::new(0);
        let (results, states) = in_parallel(
            &items,
            3,
            || (started.fetch_add(1, Ordering::SeqCst) == 0).then_some(()),
            |(), _, item| *item,
        );
        assert_eq!(results, vec![1, 2, 3]);
        assert_eq!(states.len(), 1);
        let (results, _) = in_parallel(&items, 2, || None::<()>, |(), _, item| *item);
        assert!(results.is_empty());
    }
}
