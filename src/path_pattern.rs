//! Route path patterns: `/exact`, `/prefix/*` and `/pets/{id}` segments.
//!
//! A pattern is parsed once, when the configuration is validated, and matched against request
//! paths on every request without allocating unless it captures parameters. It knows nothing
//! about methods, upstreams or the order of routes; `route` owns those.

use std::fmt;

/// A parsed `match = "..."` pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathPattern {
    source: String,
    segments: Vec<Segment>,
    /// `true` for patterns ending in `/*`: the segments are a prefix, matched at a segment
    /// boundary, so `/api/*` matches `/api` and `/api/x` but not `/apix`.
    prefix: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// Path parameters captured by a `{name}` segment, in pattern order.
pub type Params = Vec<(String, String)>;

impl PathPattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(source: &str) -> Result<PathPattern, String> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(format!("{source:?} must start with '/'"));
        };
        let (rest, prefix) = match rest.strip_suffix('*') {
            Some(head) if head.is_empty() || head.ends_with('/') => {
                (head.strip_suffix('/').unwrap_or(head), true)
            }
            Some(_) => return Err(format!("{source:?}: '*' is only allowed as a final '/*'")),
            None => (rest, false),
        };
        let mut segments = Vec::new();
        if !(prefix && rest.is_empty()) {
            for part in rest.split('/') {
                segments.push(parse_segment(source, part, &segments)?);
            }
        }
        Ok(PathPattern {
            source: source.to_string(),
            segments,
            prefix,
        })
    }

    /// The pattern as written in the configuration.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern ends in `/*` and so matches every path below it.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// Whether every path `other` matches, this pattern matches too: a route with this
    /// pattern placed before one with `other` leaves it nothing (methods aside).
    pub fn covers(&self, other: &PathPattern) -> bool {
        if self.segments.len() > other.segments.len() {
            // `other` matches paths with only its own segments, which this one finds too short.
            return false;
        }
        let each_covered = self
            .segments
            .iter()
            .zip(&other.segments)
            .all(|pair| match pair {
                (Segment::Literal(mine), Segment::Literal(theirs)) => mine == theirs,
                (Segment::Literal(_), Segment::Param(_)) => false,
                (Segment::Param(_), Segment::Literal(theirs)) => !theirs.is_empty(),
                (Segment::Param(_), Segment::Param(_)) => true,
            });
        each_covered
            && (self.prefix || (!other.prefix && self.segments.len() == other.segments.len()))
    }

    /// Whether some path this pattern matches starts with `prefix` at a segment boundary (so a
    /// route's `strip_prefix` can ever apply). `prefix` starts with '/'.
    pub fn admits_prefix(&self, prefix: &str) -> bool {
        let wanted: Vec<&str> = prefix.trim_start_matches('/').split('/').collect();
        if wanted == [""] {
            return true;
        }
        if wanted.len() > self.segments.len() && !self.prefix {
            return false;
        }
        self.segments
            .iter()
            .zip(&wanted)
            .all(|(segment, part)| match segment {
                Segment::Literal(text) => text == part,
                Segment::Param(_) => !part.is_empty(),
            })
    }

    /// Matches a request path (without its query string); `None` when it does not match.
    pub fn matches(&self, path: &str) -> Option<Params> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let mut params = Params::new();
        for segment in &self.segments {
            let part = parts.next()?;
            match segment {
                Segment::Literal(text) if text == part => {}
                Segment::Literal(_) => return None,
                Segment::Param(_) if part.is_empty() => return None,
                Segment::Param(name) => params.push((name.clone(), part.to_string())),
            }
        }
        if self.prefix || parts.next().is_none() {
            Some(params)
        } else {
            None
        }
    }
}

fn parse_segment(source: &str, part: &str, seen: &[Segment]) -> Result<Segment, String> {
    if let Some(inner) = part.strip_prefix('{') {
        let Some(name) = inner.strip_suffix('}') else {
            return Err(format!(
                "{source:?}: segment {part:?} opens '{{' without closing it"
            ));
        };
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "{source:?}: parameter name {name:?} must be letters, digits or '_'"
            ));
        }
        if seen
            .iter()
            .any(|s| matches!(s, Segment::Param(n) if n == name))
        {
            return Err(format!("{source:?}: parameter {name:?} appears twice"));
        }
        return Ok(Segment::Param(name.to_string()));
    }
    if part.contains(['{', '}', '*', '?', '#']) {
        return Err(format!(
            "{source:?}: segment {part:?} may not contain '{{', '}}', '*', '?' or '#'"
        ));
    }
    Ok(Segment::Literal(part.to_string()))
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_admitted_where_some_matching_path_starts_with_it() {
        let admits = |pattern: &str, prefix: &str| {
            PathPattern::parse(pattern).unwrap().admits_prefix(prefix)
        };
        for (pattern, prefix) in [
            ("/api/*", "/api"),
            ("/api/*", "/api/v1"),
            ("/*", "/anything"),
            ("/pets/{id}", "/pets"),
            ("/pets/{id}", "/pets/7"),
            ("/login", "/login"),
            ("/login", "/"),
        ] {
            assert!(admits(pattern, prefix), "{pattern} admits {prefix}");
        }
        for (pattern, prefix) in [
            ("/api/*", "/v1"),
            ("/api/*", "/ap"),
            ("/pets/{id}", "/pets/7/toys"),
            ("/login", "/log"),
        ] {
            assert!(
                !admits(pattern, prefix),
                "{pattern} never starts with {prefix}"
            );
        }
    }

    #[test]
    fn covering_patterns_leave_later_ones_nothing() {
        let covers = |a: &str, b: &str| {
            PathPattern::parse(a)
                .unwrap()
                .covers(&PathPattern::parse(b).unwrap())
        };
        for (earlier, later) in [
            ("/*", "/api/*"),
            ("/*", "/login"),
            ("/api/*", "/api"),
            ("/api/*", "/api/*"),
            ("/api/*", "/api/v1/*"),
            ("/api/*", "/api/{id}"),
            ("/pets/{id}", "/pets/1"),
            ("/pets/{id}", "/pets/{name}"),
            ("/pets/{id}/*", "/pets/1/toys/{toy}"),
            ("/login", "/login"),
        ] {
            assert!(covers(earlier, later), "{earlier} covers {later}");
        }
        for (earlier, later) in [
            ("/api", "/api/*"),
            ("/api/{id}", "/api/*"),
            ("/api/*", "/apix"),
            ("/pets/1", "/pets/{id}"),
            ("/pets/{id}", "/pets/{id}/toys"),
            ("/pets/{id}/toys", "/pets/*"),
            ("/a/{x}/c", "/a/b/{y}"),
            ("/login", "/logout"),
        ] {
            assert!(
                !covers(earlier, later),
                "{earlier} leaves {later} some paths"
            );
        }
    }

    fn check(pattern: &str, path: &str, expected: Option<&[(&str, &str)]>) {
        let pattern = PathPattern::parse(pattern).unwrap();
        let got = pattern.matches(path);
        let expected = expected.map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Params>()
        });
        assert_eq!(got, expected, "pattern {pattern} against {path}");
    }

    #[test]
    fn exact_patterns_match_only_the_same_path() {
        check("/health", "/health", Some(&[]));
        check("/health", "/health/", None);
        check("/health", "/healthz", None);
        check("/", "/", Some(&[]));
        check("/", "/x", None);
    }

    #[test]
    fn prefix_patterns_match_at_segment_boundaries() {
        check("/api/*", "/api", Some(&[]));
        check("/api/*", "/api/", Some(&[]));
        check("/api/*", "/api/v1/users", Some(&[]));
        check("/api/*", "/apix", None);
        check("/*", "/anything/at/all", Some(&[]));
        check("/*", "/", Some(&[]));
    }

    #[test]
    fn parameters_capture_one_non_empty_segment() {
        check("/pets/{id}", "/pets/42", Some(&[("id", "42")]));
        check("/pets/{id}", "/pets/", None);
        check("/pets/{id}", "/pets/42/toys", None);
        check(
            "/u/{user}/p/{post}",
            "/u/ann/p/7",
            Some(&[("user", "ann"), ("post", "7")]),
        );
        check("/pets/{id}/*", "/pets/1/a/b", Some(&[("id", "1")]));
    }

    #[test]
    fn malformed_patterns_are_rejected_with_a_reason() {
        for bad in [
            "api", "/a*", "/a/*/b", "/{", "/{}", "/{a-b}", "/{x}/{x}", "/a?b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
