//! The threads request work runs on. A hook may compute until its deadline and a network store
//! or directory may block, so request work never runs on tokio's async workers (a request
//! queued behind it would wait as long). tokio's blocking pool would do, but it wakes one of its
//! idle threads for every task: on the load harness that hop alone halved the rate of a handler
//! doing nothing. Here a few threads take queued work one after another without being woken,
//! and the pool grows only when work waits: when every thread is held (slow hooks, a slow
//! store), one more thread joins every few milliseconds; a thread added that way leaves after a
//! while with nothing to do.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// How the pool is sized.
#[derive(Debug, Clone, Copy)]
pub struct Sizing {
    /// Threads that stay (started as work first arrives).
    pub core: usize,
    /// The most threads, extra ones included.
    pub max: usize,
    /// Work queued this long makes the pool grow by one thread.
    pub grow_after: Duration,
    /// An extra thread idle this long leaves.
    pub retire_after: Duration,
}

impl Sizing {
    /// Two threads per core: enough to keep the cores busy when a request also waits a little
    /// (a store round trip); waits longer than `grow_after` add threads.
    pub fn for_this_machine() -> Sizing {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Sizing {
            core: 2 * cores,
            max: 512,
            grow_after: Duration::from_millis(5),
            retire_after: Duration::from_secs(10),
        }
    }
}

pub struct Workers {
    shared: Arc<Shared>,
}

struct Shared {
    sizing: Sizing,
    state: Mutex<State>,
    /// Work was queued (for an idle worker).
    queued: Condvar,
    /// Work is waiting with no idle worker (for the watchdog).
    waiting: Condvar,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<(Job, Instant)>,
    threads: usize,
    idle: usize,
    watchdog_started: bool,
    /// The watchdog waits for work to be queued (no timeout): wake it.
    watchdog_asleep: bool,
}

impl Workers {
    pub fn new(sizing: Sizing) -> Workers {
        Workers {
            shared: Arc::new(Shared {
                sizing,
                state: Mutex::new(State::default()),
                queued: Condvar::new(),
                waiting: Condvar::new(),
            }),
        }
    }

    /// The process's pool, shared by every server it runs.
    pub fn global() -> &'static Workers {
        static GLOBAL: OnceLock<Workers> = OnceLock::new();
        GLOBAL.get_or_init(|| Workers::new(Sizing::for_this_machine()))
    }

    /// Runs `work` on a pool thread, inside the caller's tokio runtime context (as
    /// `spawn_blocking` would: `Handle::current` works there); its result, or an error if it
    /// panicked.
    pub async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, String> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Handle::try_current().ok();
        self.submit(Box::new(move || {
            let _context = runtime.as_ref().map(|r| r.enter());
            let outcome =
                catch_unwind(AssertUnwindSafe(work)).map_err(|_| "the handler panicked".to_owned());
            let _ = answer.send(outcome);
        }));
        answered
            .await
            .unwrap_or_else(|_| Err("the worker stopped".to_owned()))
    }

    fn submit(&self, job: Job) {
        let shared = &self.shared;
        let mut state = shared.lock();
        state.jobs.push_back((job, Instant::now()));
        if state.idle > 0 {
            // Woken after the lock is let go, the worker does not wait for it again at once.
            drop(state);
            shared.queued.notify_one();
        } else if state.threads < shared.sizing.core {
            Shared::add_worker(shared, &mut state, false);
        } else if !state.watchdog_started {
            state.watchdog_started = true;
            let watched = shared.clone();
            let started = std::thread::Builder::new()
                .name("gatehouse-pool-watch".into())
                .spawn(move || watched.watch());
            state.watchdog_started = started.is_ok();
        } else if state.watchdog_asleep {
            state.watchdog_asleep = false;
            drop(state);
            shared.waiting.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a worker (counted in `state`). If no thread can be started and none runs, the
    /// queued work is dropped: its callers get an error rather than waiting for ever.
    fn add_worker(shared: &Arc<Shared>, state: &mut State, extra: bool) {
        let worker = shared.clone();
        let started = std::thread::Builder::new()
            .name("gatehouse-request".into())
            .spawn(move || worker.work(extra));
        match started {
            Ok(_) => state.threads += 1,
            Err(_) if state.threads == 0 => state.jobs.clear(),
            Err(_) => {}
        }
    }

    /// A worker: takes queued jobs in order; an extra one leaves after `retire_after` idle.
    fn work(&self, extra: bool) {
        let mut state = self.lock();
        loop {
            if let Some((job, _)) = state.jobs.pop_front() {
                drop(state);
                job();
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, wait) = self
                .queued
                .wait_timeout(state, self.sizing.retire_after)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
            if extra && wait.timed_out() && state.jobs.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }

    /// Adds a thread when the oldest queued job has waited `grow_after` (every thread is held),
    /// at most one per `grow_after`; sleeps while nothing is queued.
    fn watch(self: Arc<Self>) {
        let sizing = self.sizing;
        let mut last_growth: Option<Instant> = None;
        let mut state = self.lock();
        loop {
            let Some(waited) = state.jobs.front().map(|(_, at)| at.elapsed()) else {
                state.watchdog_asleep = true;
                state = self.waiting.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            let may_grow = last_growth.is_none_or(|at| at.elapsed() >= sizing.grow_after);
            if waited >= sizing.grow_after && may_grow && state.threads < sizing.max {
                last_growth = Some(Instant::now());
                Shared::add_worker(&self, &mut state, true);
            }
            let pause = sizing
                .grow_after
                .saturating_sub(waited)
                .max(sizing.grow_after / 2);
            state = self
                .waiting
                .wait_timeout(state, pause)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(core: usize) -> Workers {
        Workers::new(Sizing {
            core,
            max: 16,
            grow_after: Duration::from_millis(5),
            retire_after: Duration::from_millis(100),
        })
    }

    fn threads(workers: &Workers) -> usize {
        workers.shared.lock().threads
    }

    #[tokio::test]
    async fn runs_work_in_the_callers_runtime_and_reports_a_panic() {
        let workers = small(2);
        let answers: Vec<_> = (0..100u64).map(|n| workers.run(move || n * 2)).collect();
        let mut sum = 0;
        for answer in answers {
            sum += answer.await.unwrap();
        }
        assert_eq!(sum, 9900);
        assert!(workers
            .run(|| tokio::runtime::Handle::try_current().is_ok())
            .await
            .unwrap());
        let panicked = workers.run(|| -> u8 { panic!("boom") }).await;
        assert_eq!(panicked, Err("the handler panicked".to_owned()));
        assert_eq!(workers.run(|| 7).await, Ok(7), "the pool serves on");
        // Work sent one job at a time never needs more than the core threads.
        assert!(threads(&workers) <= 2, "{} threads", threads(&workers));
    }

    /// Work held (a looping hook) does not hold the work queued behind it: the pool grows, and
    /// the threads it added leave once idle.
    #[tokio::test]
    async fn held_threads_make_the_pool_grow_then_extra_threads_leave() {
        let workers: &'static Workers = Box::leak(Box::new(small(2)));
        let release = Arc::new((Mutex::new(false), Condvar::new()));
        let held: Vec<_> = (0..4)
            .map(|_| {
                let release = release.clone();
                workers.run(move || {
                    let (released, wake) = &*release;
                    let mut released = released.lock().unwrap();
                    while !*released {
                        released = wake.wait(released).unwrap();
                    }
                })
            })
            .collect();
        let held: Vec<_> = held.into_iter().map(tokio::spawn).collect();
        // Both threads held, two more held jobs queued behind them.
        while workers.shared.lock().jobs.len() < 2 && threads(workers) < 3 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        assert_eq!(workers.run(|| 1).await, Ok(1));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited {:?} behind held threads",
            started.elapsed()
        );
        assert!(threads(workers) >= 5, "{} threads", threads(workers));
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
        for task in held {
            task.await.unwrap().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads(workers) > 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(threads(workers), 2, "extra threads left");
    }
}
