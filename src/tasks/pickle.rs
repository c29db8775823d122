//! The one pickle shape we write: a list of str, as django-redis's PickleSerializer stores
//! `cache.set("popular_media_ids", [...])` (read back by MediaCMS's index page with pickle.loads).

/// Pickle protocol 2 encoding of a list of strings (`PROTO 2, EMPTY_LIST, MARK, BINUNICODE…,
/// APPENDS, STOP`). Any protocol ≥ 2 loads on every Python 3; no memo is needed for a flat list.
pub fn pickle_str_list(items: &[String]) -> Vec<u8> {
    let mut out = vec![0x80, 2, b']'];
    if !items.is_empty() {
        out.push(b'(');
        for item in items {
            // BINUNICODE carries a 4-byte length; media tokens are a few bytes long.
            let len = u32::try_from(item.len()).expect("a str pickled as BINUNICODE is < 4 GiB");
            out.push(b'X');
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(item.as_bytes());
        }
        out.push(b'e');
    }
    out.push(b'.');
    out
}

/// django-redis's key for `cache.set(key)` with Django's default KEY_PREFIX "" and VERSION 1.
pub fn django_cache_key(key: &str) -> String {
    format!(":1:{key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_list_is_proto_empty_list_stop() {
        assert_eq!(pickle_str_list(&[]), b"\x80\x02].".to_vec());
    }

    #[test]
    fn strings_are_binunicode_with_le_lengths() {
        let bytes = pickle_str_list(&["ab".into(), "é".into()]);
        assert_eq!(
            bytes,
            b"\x80\x02](X\x02\x00\x00\x00abX\x02\x00\x00\x00\xc3\xa9e.".to_vec()
        );
    }

    #[test]
    fn cache_key_has_django_prefix_and_version() {
        assert_eq!(
            django_cache_key("popular_media_ids"),
            ":1:popular_media_ids"
        );
    }
}
