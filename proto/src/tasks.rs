//! One way to start, watch and stop a role's long-lived tasks. Each task is an async fn (or
//! a blocking thread) that takes a cancellation token and returns a `Result`: it stops soon
//! after the token is cancelled, and an `Err` is fatal (what can be retried, the task retries
//! itself). The group cancels the rest when one fails, says which task failed and why, and
//! waits for all of them with one deadline on shutdown.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::task::{Id, JoinSet};
pub use tokio_util::sync::CancellationToken;

/// How long a role's tasks get to stop once told to.
pub const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// A task that ended with an error, or panicked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{task}: {why}")]
pub struct TaskFailed {
    /// The name it was spawned with.
    pub task: String,
    pub why: String,
}

/// A task that ended, and how.
#[derive(Debug)]
pub struct Ended {
    pub task: String,
    pub outcome: Result<(), TaskFailed>,
}

/// Tasks started together and stopped together.
pub struct TaskGroup {
    cancel: CancellationToken,
    set: JoinSet<Result<(), String>>,
    names: HashMap<Id, String>,
    /// The first task that failed.
    failure: Option<TaskFailed>,
}

impl Default for TaskGroup {
    fn default() -> Self {
        Self::new()
    }
}

impl TaskGroup {
    pub fn new() -> Self {
        Self::with_token(CancellationToken::new())
    }

    /// A group stopped by `parent` too (a whole process's signal, say); its own failures do
    /// not cancel `parent`.
    pub fn child_of(parent: &CancellationToken) -> Self {
        Self::with_token(parent.child_token())
    }

    fn with_token(cancel: CancellationToken) -> Self {
        TaskGroup { cancel, set: JoinSet::new(), names: HashMap::new(), failure: None }
    }

    /// The group's token: cancelled when the group stops.
    pub fn token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Cancels every task (they stop on their own; `shutdown` waits for them).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Starts `f(token)` as the task `name`.
    pub fn spawn<F, Fut, E>(&mut self, name: impl Into<String>, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let fut = f(self.cancel.clone());
        let h = self.set.spawn(async move { fut.await.map_err(|e| e.to_string()) });
        self.names.insert(h.id(), name.into());
    }

    /// Starts `f(token)` on a thread of its own (CPU work that must not stall the runtime)
    /// as the task `name`. It must return soon after the token is cancelled: a thread cannot
    /// be aborted.
    pub fn spawn_blocking<F, E>(&mut self, name: impl Into<String>, f: F)
    where
        F: FnOnce(CancellationToken) -> Result<(), E> + Send + 'static,
        E: Display,
    {
        let token = self.cancel.clone();
        let h = self.set.spawn_blocking(move || f(token).map_err(|e| e.to_string()));
        self.names.insert(h.id(), name.into());
    }

    /// Tasks not ended yet.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Waits for the next task to end (`None`: none is left). A failure cancels the rest.
    pub async fn next(&mut self) -> Option<Ended> {
        let joined = self.set.join_next_with_id().await?;
        let (id, outcome) = match joined {
            Ok((id, r)) => (id, r),
            Err(e) => (e.id(), Err(if e.is_panic() { panic_message(e.into_panic()) } else { "aborted".into() })),
        };
        let task = self.names.remove(&id).unwrap_or_else(|| "a task".into());
        let outcome = outcome.map_err(|why| TaskFailed { task: task.clone(), why });
        if let Err(f) = &outcome {
            if !self.cancel.is_cancelled() {
                tracing::error!("{f}; stopping the other tasks");
            }
            self.failure.get_or_insert_with(|| f.clone());
            self.cancel.cancel();
        }
        Some(Ended { task, outcome })
    }

    /// Waits until a task fails (the rest are cancelled; its failure is returned), the group
    /// is cancelled, or every task has ended well.
    pub async fn watch(&mut self) -> Result<(), TaskFailed> {
        let cancel = self.cancel.clone();
        loop {
            tokio::select! {
                ended = self.next() => match ended {
                    None => return Ok(()),
                    Some(Ended { outcome: Err(f), .. }) => return Err(f),
                    Some(_) => {}
                },
                _ = cancel.cancelled() => return Ok(()),
            }
        }
    }

    /// Cancels every task and waits up to `deadline` for all of them. Tasks still running
    /// then are aborted (threads are left to end on their own) and named in the error.
    /// Returns the first failure, if any task failed.
    pub async fn shutdown(mut self, deadline: Duration) -> Result<(), TaskFailed> {
        self.cancel.cancel();
        let waited = tokio::time::timeout(deadline, async { while self.next().await.is_some() {} }).await;
        if waited.is_err() {
            let mut late: Vec<String> = self.names.values().cloned().collect();
            late.sort();
            self.set.abort_all();
            self.set.detach_all();
            let f = TaskFailed {
                task: late.join(", "),
                why: format!("did not stop within {:.1}s of the shutdown", deadline.as_secs_f64()),
            };
            tracing::error!("{f}");
            return Err(self.failure.take().unwrap_or(f));
        }
        self.failure.take().map_or(Ok(()), Err)
    }
}

/// A group dropped stops its tasks: the async ones are aborted with the `JoinSet`, and the
/// threads see the token (a runtime waits for its blocking threads when it shuts down).
impl Drop for TaskGroup {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    let msg = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned());
    format!("panicked: {}", msg.unwrap_or_else(|| "(no message)".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Runs until cancelled, then counts its clean stop.
    async fn until_cancelled(t: CancellationToken, stopped: Arc<AtomicUsize>) -> Result<(), String> {
        t.cancelled().await;
        stopped.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    #[tokio::test]
    async fn a_failing_task_is_named_and_stops_the_others() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let mut g = TaskGroup::new();
        g.spawn("server", |t| until_cancelled(t, stopped.clone()));
        g.spawn_blocking("distiller", {
            let stopped = stopped.clone();
            move |t: CancellationToken| {
                while !t.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                stopped.fetch_add(1, Ordering::SeqCst);
                Ok::<(), String>(())
            }
        });
        g.spawn("bank", |_| async { Err::<(), _>("redis at 127.0.0.1:1 refused the connection") });
        let f = g.watch().await.unwrap_err();
        assert_eq!(f, TaskFailed { task: "bank".into(), why: "redis at 127.0.0.1:1 refused the connection".into() });
        assert!(g.is_cancelled());
        let again = g.shutdown(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(again.task, "bank", "shutdown reports the first failure");
        assert_eq!(stopped.load(Ordering::SeqCst), 2, "both others stopped cleanly");
    }

    #[tokio::test]
    async fn a_panic_is_a_failure_with_its_message() {
        let mut g = TaskGroup::new();
        fn index_out_of_bounds() -> Result<(), String> {
            panic!("index out of bounds")
        }
        g.spawn("worker 2", |_| async { index_out_of_bounds() });
        let ended = g.next().await.unwrap();
        assert_eq!(ended.task, "worker 2");
        assert_eq!(ended.outcome.unwrap_err().why, "panicked: index out of bounds");
        assert!(g.is_cancelled());
        assert!(g.next().await.is_none());
    }

    #[tokio::test]
    async fn tasks_that_end_well_do_not_stop_the_group() {
        let stopped = Arc::new(AtomicUsize::new(0));
        let mut g = TaskGroup::new();
        g.spawn("actor 0", |_| async { Ok::<(), String>(()) });
        g.spawn("learner", |t| until_cancelled(t, stopped.clone()));
        let ended = g.next().await.unwrap();
        assert_eq!((ended.task.as_str(), ended.outcome.is_ok()), ("actor 0", true));
        assert!(!g.is_cancelled());
        assert_eq!(g.len(), 1);
        g.shutdown(Duration::from_secs(5)).await.unwrap();
        assert_eq!(stopped.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn shutdown_names_the_tasks_that_ignore_the_token() {
        let parent = CancellationToken::new();
        let mut g = TaskGroup::child_of(&parent);
        g.spawn("stubborn", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), String>(())
        });
        g.spawn("polite", |t| async move {
            t.cancelled().await;
            Ok::<(), String>(())
        });
        // the parent stops the group; the group's own stop does not reach the parent
        parent.cancel();
        assert!(g.is_cancelled());
        let f = g.shutdown(Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(f.task, "stubborn");
        assert!(f.why.starts_with("did not stop within 0.2s"), "{}", f.why);
        let parent = CancellationToken::new();
        let child = TaskGroup::child_of(&parent);
        child.cancel();
        assert!(!parent.is_cancelled());
    }
}
