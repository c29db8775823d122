//! The running job's follow-ups, with the running task as their parent (Celery's
//! `current_worker_task`): a handler — or a replayed signal deep inside it — hands each task it
//! wants sent to [`follow_up`]. It is adopted at once (`parent_id` = the running task's id,
//! `root_id` = its root) and kept, in order, until the job ends; the pool then carries them in
//! the job's settlement, publishes them after the lease fence and lists the published ids as
//! `children` of the result. Nothing here publishes.
//!
//! Scoped per job by the pool (a task-local, like Celery's per-thread task stack), so the many
//! signal paths that produce follow-ups need not thread a collector through every call.

use std::sync::{Arc, Mutex};

use crate::celery::message::{OutgoingTask, TaskMessage};

tokio::task_local! {
    static CURRENT: Family;
}

/// The running task and the follow-ups it has handed over so far.
#[derive(Clone, Debug)]
pub struct Family {
    parent: Arc<TaskMessage>,
    follow_ups: Arc<Mutex<Vec<OutgoingTask>>>,
}

impl Family {
    pub fn of(task: &TaskMessage) -> Self {
        Family {
            parent: Arc::new(task.clone()),
            follow_ups: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Run `fut` (the handler) with this family collecting its follow-ups.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// The follow-ups handed over inside the scope, in order (emptied: a job settles once).
    pub fn take(&self) -> Vec<OutgoingTask> {
        std::mem::take(&mut *self.follow_ups.lock().expect("follow-ups lock"))
    }
}

/// Hand `task` to the running job for publishing when it settles, as a child of the running
/// task; returns its id. Outside a job (nothing would ever publish it) it is dropped with an
/// error in the log.
pub fn follow_up(task: OutgoingTask) -> String {
    let id = task.id.clone();
    let kept = CURRENT.try_with(|f| {
        let child = task.clone().child_of(&f.parent);
        f.follow_ups.lock().expect("follow-ups lock").push(child);
    });
    if kept.is_err() {
        tracing::error!(task = %task.name, %id, "follow-up outside a job: not published");
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn parent(root: Option<&str>) -> TaskMessage {
        let raw = crate::celery::envelope::encode_redis(
            &OutgoingTask::new("encode_media", "long_tasks", vec![json!("t")], Map::new()),
            "tag",
            "reply",
        );
        let mut msg = crate::celery::envelope::decode_redis(&raw).unwrap();
        msg.root_id = root.map(str::to_owned);
        msg
    }

    #[tokio::test]
    async fn follow_ups_in_scope_are_adopted_and_kept_in_order() {
        let p = parent(Some("root-1"));
        let family = Family::of(&p);
        let ids = family
            .clone()
            .scope(async {
                ["create_hls", "update_search_vector"]
                    .map(|name| follow_up(OutgoingTask::new(name, "q", vec![], Map::new())))
            })
            .await;
        let kept = family.take();
        assert_eq!(kept.iter().map(|t| t.id.clone()).collect::<Vec<_>>(), ids);
        for t in &kept {
            assert_eq!(t.parent_id.as_deref(), Some(p.id.as_str()));
            assert_eq!(t.root_id.as_deref(), Some("root-1"));
        }
        assert!(family.take().is_empty(), "taken once");
    }

    #[test]
    fn outside_a_job_nothing_is_kept() {
        let t = OutgoingTask::new("create_hls", "long_tasks", vec![], Map::new());
        assert_eq!(follow_up(t.clone()), t.id);
    }
}
