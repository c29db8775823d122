//! Typed arguments of the task names a MediaCMS `long_tasks` worker receives (plus
//! `chunkize_media`), bound from `args`/`kwargs` with Python's call semantics.
//!
//! Python rules kept: positional then keyword; too many positionals, an argument given both
//! ways, an unknown keyword or a missing required parameter is a `TypeError` (here an
//! [`ArgsError`] naming the parameter). Types are checked strictly: MediaCMS always sends the
//! JSON types below, so anything else is a foreign or corrupted message.

use serde_json::Value;

use super::message::TaskMessage;

/// One bound task invocation (mediacms-contract §1.1 signatures and defaults).
#[derive(Debug, Clone, PartialEq)]
pub enum LongTask {
    EncodeMedia {
        friendly_token: String,
        /// Row ids: Django's `AutoField` is a Postgres `integer`.
        profile_id: i32,
        encoding_id: i32,
        force: bool,
        chunk: bool,
        chunk_file_path: String,
        /// The unused 4th positional argument of MediaCMS ≤ 8.0.7 / the 7.3 Docker branch.
        encoding_url: Option<String>,
    },
    CreateHls {
        friendly_token: String,
    },
    ProduceSpriteFromVideo {
        friendly_token: String,
    },
    WhisperTranscribe {
        friendly_token: String,
        translate_to_english: bool,
    },
    GetListOfPopularMedia,
    UpdateListingsThumbnails,
    RemoveMediaFile {
        media_file: Option<String>,
    },
    /// A `short_tasks` task, bound here for a later feature.
    ChunkizeMedia {
        friendly_token: String,
        profiles: Vec<i64>,
        force: bool,
    },
}

/// The closed set of task names this worker can bind (the seven long ones and
/// `chunkize_media`): a fetched name is looked up once, here, and dispatched by `match`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskName {
    EncodeMedia,
    CreateHls,
    ProduceSpriteFromVideo,
    WhisperTranscribe,
    GetListOfPopularMedia,
    UpdateListingsThumbnails,
    RemoveMediaFile,
    ChunkizeMedia,
}

impl TaskName {
    pub const ALL: [TaskName; 8] = [
        TaskName::EncodeMedia,
        TaskName::CreateHls,
        TaskName::ProduceSpriteFromVideo,
        TaskName::WhisperTranscribe,
        TaskName::GetListOfPopularMedia,
        TaskName::UpdateListingsThumbnails,
        TaskName::RemoveMediaFile,
        TaskName::ChunkizeMedia,
    ];

    /// The Celery name (`headers.task`).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskName::EncodeMedia => "encode_media",
            TaskName::CreateHls => "create_hls",
            TaskName::ProduceSpriteFromVideo => "produce_sprite_from_video",
            TaskName::WhisperTranscribe => "whisper_transcribe",
            TaskName::GetListOfPopularMedia => "get_list_of_popular_media",
            TaskName::UpdateListingsThumbnails => "update_listings_thumbnails",
            TaskName::RemoveMediaFile => "remove_media_file",
            TaskName::ChunkizeMedia => "chunkize_media",
        }
    }

    /// `None` for any name outside the closed set (the pool's "unregistered task").
    pub fn parse(name: &str) -> Option<Self> {
        TaskName::ALL.into_iter().find(|n| n.as_str() == name)
    }
}

/// A delivery decoded once: the message (ids, headers, what a retry re-sends) and its
/// arguments bound to their types. Handlers read both; `Deref` gives the message's fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Task<'a> {
    pub message: &'a TaskMessage,
    pub call: LongTask,
}

impl std::ops::Deref for Task<'_> {
    type Target = TaskMessage;
    fn deref(&self) -> &TaskMessage {
        self.message
    }
}

/// The seven task names a worker on `long_tasks` receives.
pub const LONG_TASK_NAMES: [&str; 7] = [
    "encode_media",
    "create_hls",
    "produce_sprite_from_video",
    "whisper_transcribe",
    "get_list_of_popular_media",
    "update_listings_thumbnails",
    "remove_media_file",
];

/// Why arguments do not fit the task's signature (a `TypeError` in Python).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArgsError {
    #[error("unknown task `{0}`")]
    UnknownTask(String),
    #[error("{task}() missing required argument `{param}`")]
    Missing {
        task: &'static str,
        param: &'static str,
    },
    #[error("{task}() argument `{param}` must be {expected}")]
    WrongType {
        task: &'static str,
        param: &'static str,
        expected: &'static str,
    },
    #[error("{task}() takes at most {max} positional arguments but {given} were given")]
    TooManyPositional {
        task: &'static str,
        max: usize,
        given: usize,
    },
    #[error("{task}() got multiple values for argument `{param}`")]
    Duplicate {
        task: &'static str,
        param: &'static str,
    },
    #[error("{task}() got an unexpected keyword argument `{keyword}`")]
    UnexpectedKeyword { task: &'static str, keyword: String },
}

/// Bind a decoded task to its typed arguments.
pub fn bind(task: &TaskMessage) -> Result<LongTask, ArgsError> {
    match TaskName::parse(&task.name) {
        Some(name) => bind_as(name, task),
        None => Err(ArgsError::UnknownTask(task.name.clone())),
    }
}

/// Bind `task`'s arguments to the signature of `name` (already looked up by the caller).
pub fn bind_as(name: TaskName, task: &TaskMessage) -> Result<LongTask, ArgsError> {
    match name {
        TaskName::EncodeMedia => bind_encode_media(task),
        TaskName::CreateHls => {
            let v = Binder::new("create_hls", &["friendly_token"], task)?;
            Ok(LongTask::CreateHls {
                friendly_token: v.string(0)?,
            })
        }
        TaskName::ProduceSpriteFromVideo => {
            let v = Binder::new("produce_sprite_from_video", &["friendly_token"], task)?;
            Ok(LongTask::ProduceSpriteFromVideo {
                friendly_token: v.string(0)?,
            })
        }
        TaskName::WhisperTranscribe => {
            let params = ["friendly_token", "translate_to_english"];
            let v = Binder::new("whisper_transcribe", &params, task)?;
            Ok(LongTask::WhisperTranscribe {
                friendly_token: v.string(0)?,
                translate_to_english: v.bool_or(1, false)?,
            })
        }
        TaskName::GetListOfPopularMedia => {
            Binder::new("get_list_of_popular_media", &[], task)?;
            Ok(LongTask::GetListOfPopularMedia)
        }
        TaskName::UpdateListingsThumbnails => {
            Binder::new("update_listings_thumbnails", &[], task)?;
            Ok(LongTask::UpdateListingsThumbnails)
        }
        TaskName::RemoveMediaFile => {
            let v = Binder::new("remove_media_file", &["media_file"], task)?;
            Ok(LongTask::RemoveMediaFile {
                media_file: v.opt_string(0)?,
            })
        }
        TaskName::ChunkizeMedia => {
            let params = ["friendly_token", "profiles", "force"];
            let v = Binder::new("chunkize_media", &params, task)?;
            Ok(LongTask::ChunkizeMedia {
                friendly_token: v.string(0)?,
                profiles: v.int_list(1)?,
                force: v.bool_or(2, true)?,
            })
        }
    }
}

const ENCODE_PARAMS: [&str; 6] = [
    "friendly_token",
    "profile_id",
    "encoding_id",
    "force",
    "chunk",
    "chunk_file_path",
];
const ENCODE_PARAMS_LEGACY: [&str; 7] = [
    "friendly_token",
    "profile_id",
    "encoding_id",
    "encoding_url",
    "force",
    "chunk",
    "chunk_file_path",
];

/// A string in the 4th positional slot (or an `encoding_url` keyword) selects the ≤ 8.0.7
/// signature; `force` is always a bool, so the two shapes cannot be confused.
fn bind_encode_media(task: &TaskMessage) -> Result<LongTask, ArgsError> {
    let legacy = matches!(task.args.get(3), Some(Value::String(_)))
        || task.kwargs.contains_key("encoding_url");
    let params: &[&'static str] = if legacy {
        &ENCODE_PARAMS_LEGACY
    } else {
        &ENCODE_PARAMS
    };
    let v = Binder::new("encode_media", params, task)?;
    let at = |name: &str| params.iter().position(|p| *p == name).unwrap_or(0);
    Ok(LongTask::EncodeMedia {
        friendly_token: v.string(0)?,
        profile_id: v.row_id(1)?,
        encoding_id: v.row_id(2)?,
        force: v.bool_or(at("force"), true)?,
        chunk: v.bool_or(at("chunk"), false)?,
        chunk_file_path: v.string_or(at("chunk_file_path"), "")?,
        encoding_url: if legacy { v.opt_string(3)? } else { None },
    })
}

/// Arguments matched to parameter slots, then read out with typed accessors.
struct Binder<'a> {
    task: &'static str,
    params: &'a [&'static str],
    slots: Vec<Option<&'a Value>>,
}

impl<'a> Binder<'a> {
    fn new(
        task: &'static str,
        params: &'a [&'static str],
        msg: &'a TaskMessage,
    ) -> Result<Self, ArgsError> {
        if msg.args.len() > params.len() {
            return Err(ArgsError::TooManyPositional {
                task,
                max: params.len(),
                given: msg.args.len(),
            });
        }
        let mut slots: Vec<Option<&Value>> = vec![None; params.len()];
        for (slot, arg) in slots.iter_mut().zip(&msg.args) {
            *slot = Some(arg);
        }
        for (key, value) in &msg.kwargs {
            let Some(i) = params.iter().position(|p| p == key) else {
                return Err(ArgsError::UnexpectedKeyword {
                    task,
                    keyword: key.chars().take(64).collect(),
                });
            };
            if slots[i].is_some() {
                return Err(ArgsError::Duplicate {
                    task,
                    param: params[i],
                });
            }
            slots[i] = Some(value);
        }
        Ok(Binder {
            task,
            params,
            slots,
        })
    }

    fn wrong(&self, i: usize, expected: &'static str) -> ArgsError {
        ArgsError::WrongType {
            task: self.task,
            param: self.params[i],
            expected,
        }
    }

    fn required(&self, i: usize) -> Result<&'a Value, ArgsError> {
        self.slots[i].ok_or(ArgsError::Missing {
            task: self.task,
            param: self.params[i],
        })
    }

    fn string(&self, i: usize) -> Result<String, ArgsError> {
        match self.required(i)? {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.wrong(i, "a string")),
        }
    }

    fn string_or(&self, i: usize, default: &str) -> Result<String, ArgsError> {
        match self.slots[i] {
            None => Ok(default.to_owned()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(self.wrong(i, "a string")),
        }
    }

    fn opt_string(&self, i: usize) -> Result<Option<String>, ArgsError> {
        match self.slots[i] {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.wrong(i, "a string or null")),
        }
    }

    fn int(&self, i: usize) -> Result<i64, ArgsError> {
        self.required(i)?
            .as_i64()
            .ok_or_else(|| self.wrong(i, "an integer"))
    }

    /// A row id: anything outside i32 names no row — never a wrapped-around other one
    /// (2^32 + 5 is not row 5).
    fn row_id(&self, i: usize) -> Result<i32, ArgsError> {
        i32::try_from(self.int(i)?).map_err(|_| self.wrong(i, "an integer primary key (32-bit)"))
    }

    fn bool_or(&self, i: usize, default: bool) -> Result<bool, ArgsError> {
        match self.slots[i] {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.wrong(i, "a boolean")),
        }
    }

    fn int_list(&self, i: usize) -> Result<Vec<i64>, ArgsError> {
        let Value::Array(items) = self.required(i)? else {
            return Err(self.wrong(i, "a list of integers"));
        };
        items
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| self.wrong(i, "a list of integers"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    fn msg(name: &str, args: Value, kwargs: Value) -> TaskMessage {
        let (Value::Array(args), Value::Object(kwargs)) = (args, kwargs) else {
            panic!("test input")
        };
        TaskMessage {
            name: name.into(),
            id: "id".into(),
            args,
            kwargs,
            embed: Value::Null,
            eta: None,
            expires: None,
            retries: 0,
            time_limit: (None, None),
            root_id: None,
            parent_id: None,
            priority: 0,
            routing_key: "long_tasks".into(),
            headers: Map::new(),
            properties: Map::new(),
        }
    }

    fn bind_of(name: &str, args: Value, kwargs: Value) -> Result<LongTask, ArgsError> {
        bind(&msg(name, args, kwargs))
    }

    #[test]
    fn encode_media_all_keyword() {
        let got = bind_of(
            "encode_media",
            json!([]),
            json!({"friendly_token": "t", "profile_id": 1, "encoding_id": 2, "chunk": true,
                   "chunk_file_path": "/c.mkv", "force": false}),
        );
        let want = LongTask::EncodeMedia {
            friendly_token: "t".into(),
            profile_id: 1,
            encoding_id: 2,
            force: false,
            chunk: true,
            chunk_file_path: "/c.mkv".into(),
            encoding_url: None,
        };
        assert_eq!(got, Ok(want));
    }

    #[test]
    fn encode_media_positional_force_and_legacy_keyword_url() {
        let got = bind_of("encode_media", json!(["t", 1, 2, false]), json!({})).unwrap();
        assert!(matches!(
            got,
            LongTask::EncodeMedia {
                force: false,
                encoding_url: None,
                ..
            }
        ));
        let got = bind_of(
            "encode_media",
            json!(["t", 1, 2]),
            json!({"encoding_url": "u"}),
        );
        assert!(matches!(
            got,
            Ok(LongTask::EncodeMedia {
                encoding_url: Some(_),
                ..
            })
        ));
    }

    #[test]
    fn python_call_errors_name_the_parameter() {
        let e = |name, args, kwargs| bind_of(name, args, kwargs).unwrap_err();
        let task = "encode_media";
        assert_eq!(
            e(task, json!(["t", 1]), json!({})),
            ArgsError::Missing {
                task,
                param: "encoding_id"
            }
        );
        assert_eq!(
            e(task, json!(["t", "1", 2]), json!({})),
            ArgsError::WrongType {
                task,
                param: "profile_id",
                expected: "an integer"
            }
        );
        assert_eq!(
            e(task, json!(["t", 1, 2, true, false, "", 9]), json!({})),
            ArgsError::TooManyPositional {
                task,
                max: 6,
                given: 7
            }
        );
        assert_eq!(
            e(task, json!(["t", 1, 2]), json!({"profile_id": 3})),
            ArgsError::Duplicate {
                task,
                param: "profile_id"
            }
        );
        assert_eq!(
            e(task, json!(["t", 1, 2]), json!({"force": "yes"})),
            ArgsError::WrongType {
                task,
                param: "force",
                expected: "a boolean"
            }
        );
        assert_eq!(
            e("create_hls", json!(["t"]), json!({"bogus": 1})),
            ArgsError::UnexpectedKeyword {
                task: "create_hls",
                keyword: "bogus".into()
            }
        );
        assert_eq!(
            e("get_list_of_popular_media", json!([1]), json!({})),
            ArgsError::TooManyPositional {
                task: "get_list_of_popular_media",
                max: 0,
                given: 1
            }
        );
        assert_eq!(
            e("chunkize_media", json!(["t", [1, "x"]]), json!({})),
            ArgsError::WrongType {
                task: "chunkize_media",
                param: "profiles",
                expected: "a list of integers"
            }
        );
        assert_eq!(
            e("nope", json!([]), json!({})),
            ArgsError::UnknownTask("nope".into())
        );
    }

    #[test]
    fn encoding_id_narrowing_is_an_error_not_a_wraparound() {
        let bound = |id: i64| bind_of("encode_media", json!(["t", 1, id]), json!({}));
        assert!(matches!(
            bound(5),
            Ok(LongTask::EncodeMedia { encoding_id: 5, .. })
        ));
        for id in [(1_i64 << 32) + 5, i64::from(i32::MAX) + 1, -(1_i64 << 32)] {
            assert!(
                matches!(
                    bound(id),
                    Err(ArgsError::WrongType {
                        param: "encoding_id",
                        ..
                    })
                ),
                "{id} must not become a row id"
            );
        }
    }

    #[test]
    fn every_long_task_name_is_known() {
        for name in LONG_TASK_NAMES {
            let err = bind_of(name, json!([]), json!({})).err();
            assert!(!matches!(err, Some(ArgsError::UnknownTask(_))), "{name}");
        }
    }
}
