//! `remove_media_file(media_file)` (contract §5.6): delete one regular file inside MEDIA_ROOT.
//!
//! MediaCMS `rm`s whatever path it is given. Here the path must resolve inside MEDIA_ROOT and
//! name a regular file (`layout::remove_media_file`): `..` escapes, symlinks (wherever they
//! point) and absolute paths elsewhere are refused, logged, and the task returns `false`.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::env::TaskEnv;
use super::{infra_outcome, misrouted, JobContext, LongTask, Outcome, Task, TaskHandler};
use crate::mediacms::layout::{self, LayoutError};
use crate::mediacms::Disposition;

pub struct RemoveMediaFile {
    pub env: Arc<TaskEnv>,
}

#[async_trait]
impl TaskHandler for RemoveMediaFile {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        let LongTask::RemoveMediaFile { media_file } = &task.call else {
            return misrouted(task);
        };
        // MediaCMS: no path (or an empty one) is nothing to do, and still `True`.
        let Some(path) = media_file.as_deref().filter(|p| !p.is_empty()) else {
            return Outcome::Success(json!(true));
        };
        match layout::remove_media_file(self.env.media_root(), Path::new(&path)) {
            Ok(true) => {
                tracing::info!(path, "media file removed");
                Outcome::Success(json!(true))
            }
            // Already gone: the goal is reached, as with MediaCMS's `isfile` check.
            Ok(false) => Outcome::Success(json!(true)),
            // An I/O error (permission, read-only volume) would fail the same way on a requeue:
            // nothing enqueues this task in a loop, so report it instead of retrying forever.
            Err(e @ LayoutError::Io { .. }) => {
                infra_outcome(task, &ctx, &e.to_string(), Disposition::Fail).await
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "remove_media_file refused");
                Outcome::Success(json!(false))
            }
        }
    }
}
