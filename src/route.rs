//! The route table of the proxy listener: ordered routes, first match wins.
//!
//! Resolution is pure: a method and a path in, a decision out. What a matched route does
//! (check its flag, proxy to an upstream, run its SQL) is up to `router`.

use std::sync::Arc;

use http::Method;

use crate::config::{RouteConfig, RouteTarget};
use crate::path_pattern::Params;

/// A route ready to serve: its configuration plus the name shared by metrics and logs.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub config: RouteConfig,
    /// For SQL routes: the statement wrapped to answer one JSON array, built once.
    pub wrapped_sql: Option<Arc<str>>,
}

/// The outcome of looking a request up.
#[derive(Debug)]
pub enum Resolution<'a> {
    Matched {
        route: &'a Arc<Route>,
        params: Params,
    },
    /// Some route matches the path, none the method.
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    NotFound,
}

pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(configs: &[RouteConfig]) -> RouteTable {
        let routes = configs
            .iter()
            .map(|config| {
                Arc::new(Route {
                    name: Arc::from(config.name.as_str()),
                    wrapped_sql: match &config.target {
                        RouteTarget::Postgres(sql) => {
                            Some(Arc::from(crate::pg::wrap_as_json(&sql.sql)))
                        }
                        RouteTarget::Upstream(_) => None,
                    },
                    config: config.clone(),
                })
            })
            .collect();
        RouteTable { routes }
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Resolution<'_> {
        let mut allow: Vec<Method> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.config.pattern.matches(path) else {
                continue;
            };
            match &route.config.methods {
                Some(methods) if !methods.contains(method) => {
                    for m in methods {
                        if !allow.contains(m) {
                            allow.push(m.clone());
                        }
                    }
                }
                _ => return Resolution::Matched { route, params },
            }
        }
        if allow.is_empty() {
            Resolution::NotFound
        } else {
            Resolution::MethodNotAllowed { allow }
        }
    }
}

/// The path to send upstream: `strip_prefix` removed when present, always starting with '/'.
pub fn upstream_path<'a>(route: &RouteConfig, path: &'a str) -> std::borrow::Cow<'a, str> {
    let Some(prefix) = route.strip_prefix.as_deref() else {
        return path.into();
    };
    match path.strip_prefix(prefix) {
        Some("") => "/".into(),
        Some(rest) if rest.starts_with('/') => rest.into(),
        // `/apix` does not lose `/api`: prefixes are stripped at segment boundaries only.
        _ => path.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, MapEnv};

    fn table(routes: &str) -> RouteTable {
        let text = format!("[upstreams.app]\nurl = \"http://127.0.0.1:1\"\n{routes}");
        RouteTable::new(&Config::from_toml(&text, &MapEnv::new()).unwrap().routes)
    }

    fn name(resolution: Resolution<'_>) -> String {
        match resolution {
            Resolution::Matched { route, .. } => route.name.to_string(),
            Resolution::MethodNotAllowed { allow } => format!("405 {allow:?}"),
            Resolution::NotFound => "404".to_string(),
        }
    }

    #[test]
    fn first_match_wins_and_methods_filter() {
        let t = table(
            r#"
[[routes]]
name = "pet-read"
match = "/pets/{id}"
methods = ["GET"]
upstream = "app"
[[routes]]
name = "everything"
match = "/*"
methods = ["GET", "POST"]
upstream = "app"
"#,
        );
        assert_eq!(name(t.resolve(&Method::GET, "/pets/1")), "pet-read");
        assert_eq!(name(t.resolve(&Method::POST, "/pets/1")), "everything");
        assert_eq!(
            name(t.resolve(&Method::HEAD, "/pets/1")),
            "pet-read",
            "a route that answers GET answers HEAD"
        );
        assert_eq!(
            name(t.resolve(&Method::DELETE, "/pets/1")),
            "405 [GET, HEAD, POST]"
        );
        assert_eq!(name(table("").resolve(&Method::GET, "/")), "404");
    }

    #[test]
    fn strip_prefix_only_at_segment_boundaries() {
        let t = table(
            "[[routes]]\nname = \"api\"\nmatch = \"/api/*\"\nupstream = \"app\"\nstrip_prefix = \"/api\"\n",
        );
        let Resolution::Matched { route, .. } = t.resolve(&Method::GET, "/api/x") else {
            panic!()
        };
        assert_eq!(upstream_path(&route.config, "/api/users/1"), "/users/1");
        assert_eq!(upstream_path(&route.config, "/api"), "/");
        assert_eq!(upstream_path(&route.config, "/apix"), "/apix");
    }
}
