//! The running task as the parent of what it publishes (Celery's `current_worker_task`): each
//! follow-up gets `parent_id` = the running task's id and `root_id` = its root, and the ids
//! published are listed as `children` in the running task's result.
//!
//! Scoped per job by the pool (a task-local, like Celery's per-thread task stack), so the many
//! signal paths that publish follow-ups need not thread the parent through every call.

use std::sync::{Arc, Mutex};

use crate::celery::message::{OutgoingTask, TaskMessage};

tokio::task_local! {
    static CURRENT: Family;
}

/// The running task and the children it has published so far.
#[derive(Clone, Debug)]
pub struct Family {
    parent: Arc<TaskMessage>,
    children: Arc<Mutex<Vec<String>>>,
}

impl Family {
    pub fn of(task: &TaskMessage) -> Self {
        Family {
            parent: Arc::new(task.clone()),
            children: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Run `fut` (the handler) with this family as the publisher of its follow-ups.
    pub async fn scope<F: std::future::Future>(self, fut: F) -> F::Output {
        CURRENT.scope(self, fut).await
    }

    /// Ids published inside the scope, in publish order.
    pub fn children(&self) -> Vec<String> {
        self.children.lock().expect("children lock").clone()
    }
}

/// `task` as a child of the running task (unchanged outside a job, e.g. in the CLI).
pub fn adopt(task: OutgoingTask) -> OutgoingTask {
    CURRENT
        .try_with(|f| task.clone().child_of(&f.parent))
        .unwrap_or(task)
}

/// Record a published child of the running task.
pub fn published(id: &str) {
    let _ = CURRENT.try_with(|f| {
        f.children
            .lock()
            .expect("children lock")
            .push(id.to_owned())
    });
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
    async fn children_published_in_scope_are_adopted_and_listed() {
        let p = parent(Some("root-1"));
        let family = Family::of(&p);
        let ids = family
            .clone()
            .scope(async {
                let a = adopt(OutgoingTask::new(
                    "create_hls",
                    "long_tasks",
                    vec![],
                    Map::new(),
                ));
                published(&a.id);
                assert_eq!(a.parent_id.as_deref(), Some(p.id.as_str()));
                assert_eq!(a.root_id.as_deref(), Some("root-1"));
                vec![a.id]
            })
            .await;
        assert_eq!(family.children(), ids);
    }

    #[test]
    fn outside_a_job_nothing_is_adopted() {
        let t = OutgoingTask::new("create_hls", "long_tasks", vec![], Map::new());
        let root = t.root_id.clone();
        let t = adopt(t);
        published(&t.id);
        assert_eq!((t.parent_id, t.root_id), (None, root));
    }
}
