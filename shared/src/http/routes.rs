//! The route table: the single source of truth for method + path → function. The local server,
//! every Lambda function, the tests and the deployment checks all read `ROUTES`.

use http::Method;

use super::error::ApiError;

/// One Lambda function per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Function {
    Health,
    ListTasks,
    CreateTask,
    GetTask,
    UpdateTask,
    DeleteTask,
    ToggleTask,
    ListChanges,
}

impl Function {
    /// The binary (and SAM resource stem) name of the function.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::ListTasks => "list-tasks",
            Self::CreateTask => "create-task",
            Self::GetTask => "get-task",
            Self::UpdateTask => "update-task",
            Self::DeleteTask => "delete-task",
            Self::ToggleTask => "toggle-task",
            Self::ListChanges => "list-changes",
        }
    }
}

pub struct Route {
    pub method: Method,
    /// Path pattern; `{task_id}` matches one non-empty segment.
    pub path: &'static str,
    pub function: Function,
}

pub const TASK_ID_PARAM: &str = "{task_id}";

/// The function behind API Gateway's catch-all (`$default`) route: not a route of its own, it
/// answers 404/405 from this table for everything the routes below do not match.
pub const CATCH_ALL: &str = "not-found";

pub const ROUTES: [Route; 8] = [
    Route {
        method: Method::GET,
        path: "/health",
        function: Function::Health,
    },
    Route {
        method: Method::GET,
        path: "/api/tasks",
        function: Function::ListTasks,
    },
    Route {
        method: Method::POST,
        path: "/api/tasks",
        function: Function::CreateTask,
    },
    Route {
        method: Method::GET,
        path: "/api/tasks/{task_id}",
        function: Function::GetTask,
    },
    Route {
        method: Method::PUT,
        path: "/api/tasks/{task_id}",
        function: Function::UpdateTask,
    },
    Route {
        method: Method::DELETE,
        path: "/api/tasks/{task_id}",
        function: Function::DeleteTask,
    },
    Route {
        method: Method::PATCH,
        path: "/api/tasks/{task_id}/toggle",
        function: Function::ToggleTask,
    },
    Route {
        method: Method::GET,
        path: "/api/changes",
        function: Function::ListChanges,
    },
];

/// A request matched to its function, with the raw `{task_id}` segment if the route has one.
#[derive(Debug, PartialEq, Eq)]
pub struct Matched<'a> {
    pub function: Function,
    pub task_id: Option<&'a str>,
}

/// Routing, the first check of every request: unknown path → 404 `NOT_FOUND`; known path with
/// another method → 405 with the allowed methods.
pub fn resolve<'a>(method: &Method, path: &'a str) -> Result<Matched<'a>, ApiError> {
    let mut allow = Vec::new();
    for route in &ROUTES {
        let Some(task_id) = match_path(route.path, path) else {
            continue;
        };
        if route.method == *method {
            return Ok(Matched {
                function: route.function,
                task_id,
            });
        }
        allow.push(route.method.clone());
    }
    if allow.is_empty() {
        Err(ApiError::NotFound)
    } else {
        Err(ApiError::MethodNotAllowed { allow })
    }
}

/// `Some(task_id segment or None)` when `path` fits `pattern`.
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<Option<&'a str>> {
    let mut task_id = None;
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(task_id),
            (Some(TASK_ID_PARAM), Some(segment)) if !segment.is_empty() => task_id = Some(segment),
            (Some(expected), Some(segment)) if expected == segment => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_resolves_to_its_function() {
        for route in &ROUTES {
            let path = route.path.replace(TASK_ID_PARAM, "abc");
            let matched = resolve(&route.method, &path).unwrap();
            assert_eq!(matched.function, route.function);
            assert_eq!(
                matched.task_id.is_some(),
                route.path.contains(TASK_ID_PARAM)
            );
        }
    }

    #[test]
    fn unknown_paths_are_not_found() {
        for path in [
            "/",
            "/api",
            "/api/tasks/",
            "/api/tasks/x/",
            "/api/tasks//toggle",
            "/health/",
        ] {
            assert!(
                matches!(resolve(&Method::GET, path), Err(ApiError::NotFound)),
                "{path}"
            );
        }
    }

    #[test]
    fn known_paths_with_other_methods_list_the_allowed_ones() {
        let Err(ApiError::MethodNotAllowed { allow }) = resolve(&Method::HEAD, "/api/tasks/x")
        else {
            panic!("expected 405");
        };
        assert_eq!(allow, [Method::GET, Method::PUT, Method::DELETE]);
        let Err(ApiError::MethodNotAllowed { allow }) = resolve(&Method::DELETE, "/api/tasks")
        else {
            panic!("expected 405");
        };
        assert_eq!(allow, [Method::GET, Method::POST]);
    }
}
