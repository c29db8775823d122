//! The two beat tasks of `long_tasks` (contract §5.4, §5.5): `get_list_of_popular_media` writes
//! the popular friendly tokens into the Django cache (django-redis: key `:1:popular_media_ids`,
//! pickled list, 12 h TTL) and `update_listings_thumbnails` refreshes category/tag thumbnails.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::env::TaskEnv;
use super::pickle::{django_cache_key, pickle_str_list};
use super::{infra_outcome, misrouted, JobContext, LongTask, Outcome, Task, TaskHandler};
use crate::celery::message::TaskMessage;
use crate::mediacms::Disposition;

/// `cache.set("popular_media_ids", …, 43200)`.
const POPULAR_KEY: &str = "popular_media_ids";
const POPULAR_TTL_SECS: u64 = 43_200;

/// Both beat task names share this handler (one store, one cache connection).
pub struct BeatTasks {
    pub env: Arc<TaskEnv>,
    /// The Django cache: MediaCMS's REDIS_LOCATION (the broker's Redis DB by default).
    pub cache: redis::Client,
}

#[async_trait]
impl TaskHandler for BeatTasks {
    async fn run(&self, task: &Task<'_>, ctx: JobContext) -> Outcome {
        match task.call {
            LongTask::GetListOfPopularMedia => self.popular_media(task, &ctx).await,
            LongTask::UpdateListingsThumbnails => self.listings_thumbnails(task, &ctx).await,
            _ => misrouted(task),
        }
    }
}

impl BeatTasks {
    async fn popular_media(&self, task: &TaskMessage, ctx: &JobContext) -> Outcome {
        let tokens = match self.env.signals.store().popular_media_tokens().await {
            Ok(t) => t,
            Err(e) => return infra_outcome(task, ctx, &e.to_string(), e.disposition()).await,
        };
        if let Err(e) = self.cache_set(&tokens).await {
            // A cache outage is transient; the next beat (or this requeue) rewrites the key.
            let message = format!("writing {POPULAR_KEY} to the Django cache: {e}");
            return infra_outcome(task, ctx, &message, Disposition::Retry).await;
        }
        tracing::info!(count = tokens.len(), "popular media cached");
        Outcome::Success(json!(true))
    }

    /// `SET :1:popular_media_ids <pickle> EX 43200`, what django-redis's `cache.set` sends.
    async fn cache_set(&self, tokens: &[String]) -> redis::RedisResult<()> {
        let mut conn = self.cache.get_multiplexed_async_connection().await?;
        redis::cmd("SET")
            .arg(django_cache_key(POPULAR_KEY))
            .arg(pickle_str_list(tokens))
            .arg("EX")
            .arg(POPULAR_TTL_SECS)
            .query_async(&mut conn)
            .await
    }

    async fn listings_thumbnails(&self, task: &TaskMessage, ctx: &JobContext) -> Outcome {
        match self.env.signals.store().update_listings_thumbnails().await {
            Ok(updated) => {
                tracing::info!(
                    categories = updated.categories,
                    tags = updated.tags,
                    "listings thumbnails updated"
                );
                Outcome::Success(json!(true))
            }
            Err(e) => infra_outcome(task, ctx, &e.to_string(), e.disposition()).await,
        }
    }
}
