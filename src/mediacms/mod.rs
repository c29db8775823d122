//! MediaCMS's database and media volume: all SQL, replayed Django signals, file layout (pending).
