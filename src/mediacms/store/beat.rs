//! Queries of the two beat tasks: `get_list_of_popular_media` (§5.4) and
//! `update_listings_thumbnails` (§5.5).

use deadpool_postgres::GenericClient;

use super::{Result, Store};

/// Counts in these windows, top 25 each (contract §5.4).
const WATCH_DAYS: i32 = 7;
const LIKE_DAYS: i32 = 180;
const TOP_N: i64 = 25;

/// Rows changed by [`Store::update_listings_thumbnails`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListingsUpdated {
    pub categories: usize,
    pub tags: usize,
}

impl Store {
    /// Friendly tokens of the popular listable media: the top 25 by `watch` actions in the
    /// last 7 days, then the top 25 by `like` actions in the last 180 days not already listed.
    /// Media with no such action are not candidates (MediaCMS keeps only non-zero counts).
    pub async fn popular_media_tokens(&self) -> Result<Vec<String>> {
        let c = self.conn().await?;
        let mut tokens = top_by_action(&c, "watch", WATCH_DAYS).await?;
        for t in top_by_action(&c, "like", LIKE_DAYS).await? {
            if !tokens.contains(&t) {
                tokens.push(t);
            }
        }
        Ok(tokens)
    }

    /// For each category (by title), then each tag (by title): the most viewed public,
    /// reviewed media not already used for an earlier category (resp. tag) gives its
    /// thumbnail URL to `listings_thumbnail`. A category/tag without candidates is untouched.
    pub async fn update_listings_thumbnails(&self) -> Result<ListingsUpdated> {
        let mut c = self.conn().await?;
        let tx = c.transaction().await?;
        let categories = assign_thumbnails(&tx, Family::Category).await?;
        let tags = assign_thumbnails(&tx, Family::Tag).await?;
        tx.commit().await?;
        Ok(ListingsUpdated { categories, tags })
    }
}

async fn top_by_action<C: GenericClient>(c: &C, action: &str, days: i32) -> Result<Vec<String>> {
    let rows = c
        .query(
            "SELECT m.friendly_token, COUNT(*) AS n FROM files_media m \
             JOIN actions_mediaaction a ON a.media_id = m.id \
             WHERE m.listable AND a.action = $1 \
               AND a.action_date >= now() - make_interval(days => $2) \
             GROUP BY m.id, m.friendly_token ORDER BY n DESC, m.id LIMIT $3",
            &[&action, &days, &TOP_N],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

#[derive(Clone, Copy)]
enum Family {
    Category,
    Tag,
}

impl Family {
    fn list_sql(self) -> &'static str {
        match self {
            Self::Category => "SELECT id FROM files_category ORDER BY title, id",
            Self::Tag => "SELECT id FROM files_tag ORDER BY title, id",
        }
    }

    fn pick_sql(self) -> &'static str {
        match self {
            Self::Category => {
                "SELECT m.id, m.uploaded_thumbnail, m.thumbnail, m.media_type FROM files_media m \
                 JOIN files_media_category x ON x.media_id = m.id WHERE x.category_id = $1 \
                 AND m.state = 'public' AND m.is_reviewed AND NOT (m.id = ANY($2)) \
                 ORDER BY m.views DESC, m.id LIMIT 1"
            }
            Self::Tag => {
                "SELECT m.id, m.uploaded_thumbnail, m.thumbnail, m.media_type FROM files_media m \
                 JOIN files_media_tags x ON x.media_id = m.id WHERE x.tag_id = $1 \
                 AND m.state = 'public' AND m.is_reviewed AND NOT (m.id = ANY($2)) \
                 ORDER BY m.views DESC, m.id LIMIT 1"
            }
        }
    }

    fn update_sql(self) -> &'static str {
        match self {
            Self::Category => "UPDATE files_category SET listings_thumbnail = $2 WHERE id = $1",
            Self::Tag => "UPDATE files_tag SET listings_thumbnail = $2 WHERE id = $1",
        }
    }
}

async fn assign_thumbnails<C: GenericClient>(c: &C, family: Family) -> Result<usize> {
    let mut used: Vec<i32> = Vec::new();
    let mut changed = 0;
    for owner in c.query(family.list_sql(), &[]).await? {
        let owner_id: i32 = owner.get(0);
        let Some(m) = c.query_opt(family.pick_sql(), &[&owner_id, &used]).await? else {
            continue;
        };
        used.push(m.get(0));
        let url = thumbnail_url(m.get(1), m.get(2), m.get(3));
        let rows = c.execute(family.update_sql(), &[&owner_id, &url]).await?;
        changed += usize::try_from(rows).unwrap_or(usize::MAX);
    }
    Ok(changed)
}

/// `Media.thumbnail_url`: uploaded thumbnail, else thumbnail, else the audio poster, else NULL.
pub(crate) fn thumbnail_url(uploaded: &str, thumbnail: &str, media_type: &str) -> Option<String> {
    if !uploaded.is_empty() {
        Some(format!("/media/{uploaded}"))
    } else if !thumbnail.is_empty() {
        Some(format!("/media/{thumbnail}"))
    } else if media_type == "audio" {
        Some("/media/userlogos/poster_audio.jpg".to_owned())
    } else {
        None
    }
}
