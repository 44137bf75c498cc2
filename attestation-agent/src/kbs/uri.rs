//! `kbs:///repo/type/tag` resource URIs.

/// Longest path segment of a resource.
const MAX_SEGMENT_LEN: usize = 64;

/// A resource URI that does not have the form `kbs:///repo/type/tag`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("resource uri {uri:?} is not of the form kbs:///repo/type/tag")]
pub struct InvalidResourceUri {
    uri: String,
}

/// A parsed resource URI. The authority part (`kbs://<host>/...`) is accepted and ignored: the
/// broker is configured, never taken from the URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceUri {
    repo: String,
    kind: String,
    tag: String,
}

impl ResourceUri {
    /// Parses `kbs:///repo/type/tag` (or `kbs://host/repo/type/tag`).
    pub fn parse(uri: &str) -> Result<Self, InvalidResourceUri> {
        let invalid = || InvalidResourceUri {
            uri: uri.chars().take(200).collect(),
        };
        let rest = uri.strip_prefix("kbs://").ok_or_else(invalid)?;
        let (_authority, path) = rest.split_once('/').ok_or_else(invalid)?;
        let mut parts = path.split('/');
        let (Some(repo), Some(kind), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        for segment in [repo, kind, tag] {
            let ok = !segment.is_empty()
                && segment.len() <= MAX_SEGMENT_LEN
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(invalid());
            }
        }
        Ok(Self {
            repo: repo.into(),
            kind: kind.into(),
            tag: tag.into(),
        })
    }

    /// The request path on the broker: `repo/type/tag`.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.repo, self.kind, self.tag)
    }
}

impl std::str::FromStr for ResourceUri {
    type Err = InvalidResourceUri;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kbs_uris() {
        assert_eq!(
            ResourceUri::parse("kbs:///default/key/1").unwrap().path(),
            "default/key/1"
        );
        assert_eq!(
            ResourceUri::parse("kbs://broker:8080/a/b/c")
                .unwrap()
                .path(),
            "a/b/c"
        );
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "https:///a/b/c",
            "kbs:///a/b",
            "kbs:///a/b/c/d",
            "kbs:///../b/c",
            "kbs:///a/./c",
            "kbs:///a//c",
            "kbs:///a/b/c?x=1",
            "kbs:///a/b/%2e%2e",
            "kbs://",
        ] {
            assert!(ResourceUri::parse(bad).is_err(), "{bad}");
        }
    }
}
