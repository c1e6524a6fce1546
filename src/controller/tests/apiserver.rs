//! An in-memory apiserver for engine tests: a tower service behind a real `kube::Client`.
//!
//! It keeps objects as JSON by path and answers what the engine asks of a real apiserver:
//! GET, POST (409 when the name is taken), PATCH (merge, JSON patch, server-side apply taken as
//! a merge), DELETE, the `/status` subresource of custom resources, resourceVersion bumps and a
//! 409 Conflict on a stale one, and finalizers: deleting an object that has some only sets
//! `deletionTimestamp`, no finalizer may be added once it is set, and removing the last one of
//! an object being deleted removes it. Events are stored like any object, so tests read their
//! reasons. Any request can be made to fail once ([`ApiServer::fail`]), before or after it
//! takes effect.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The CRD groups whose objects have a status subresource (the engine tests' kind, and the
/// operator's own kinds in the simulation).
const STATUS_GROUPS: [&str; 2] = ["/apis/test.nuclia.dev/", "/apis/nuclia.dev/"];

fn has_status(path: &str) -> bool {
    STATUS_GROUPS.iter().any(|g| path.starts_with(g))
}

#[derive(Clone, Default)]
pub struct ApiServer(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    version: u64,
    faults: Vec<Fault>,
    /// Every request, as `METHOD path`.
    log: Vec<String>,
    /// The simulation's clock (None: real time).
    clock: Option<chrono::DateTime<chrono::Utc>>,
    /// Namespaces being deleted: nothing new may be created in them.
    terminating: std::collections::BTreeSet<String>,
    crash: Option<Crash>,
}

/// A process crash armed at a write (see [`ApiServer::crash_after`]).
struct Crash {
    writes_left: usize,
    /// The last write does not take effect.
    before: bool,
    crashed: Box<dyn Fn() + Send>,
    down: bool,
}

struct Fault {
    method: Method,
    path_contains: String,
    code: u16,
    /// Carry the request out, then answer the error anyway (a timeout after the write).
    after: bool,
}

fn status(code: u16, reason: &str, message: impl Into<String>) -> (u16, Value) {
    let message = message.into();
    (
        code,
        json!({"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": code,
               "reason": reason, "message": message}),
    )
}

fn finalizers(v: &Value) -> Vec<String> {
    serde_json::from_value(v["metadata"]["finalizers"].clone()).unwrap_or_default()
}

/// Whether `v` is a valid label value (at most 63 characters, alphanumeric at both ends,
/// `-`, `_` and `.` between), as the real apiserver checks it.
fn valid_label_value(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    v.is_empty()
        || (v.len() <= 63
            && alnum(v.chars().next())
            && alnum(v.chars().last())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

/// The first invalid label of `v`, as the apiserver's 422 names it.
fn invalid_label(v: &Value) -> Option<String> {
    let labels = v["metadata"]["labels"].as_object()?;
    labels.iter().find_map(|(k, l)| {
        let l = l.as_str().unwrap_or_default();
        (!valid_label_value(l))
            .then(|| format!("metadata.labels: Invalid value: \"{l}\" (label {k})"))
    })
}

/// The namespace a path names, if any.
fn namespace_of(path: &str) -> Option<&str> {
    let rest = path.split("/namespaces/").nth(1)?;
    Some(rest.split('/').next().unwrap_or(rest))
}

impl State {
    fn now(&self) -> String {
        self.clock
            .unwrap_or_else(chrono::Utc::now)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn bump(&mut self, v: &mut Value) {
        self.version += 1;
        v["metadata"]["resourceVersion"] = self.version.to_string().into();
    }

    fn handle(&mut self, method: &Method, path: &str, ctype: &str, body: &[u8]) -> (u16, Value) {
        self.handle_dry(method, path, ctype, body, false)
    }

    fn handle_dry(
        &mut self,
        method: &Method,
        path: &str,
        ctype: &str,
        body: &[u8],
        dry_run: bool,
    ) -> (u16, Value) {
        self.log.push(match dry_run {
            true => format!("{method} {path} (dryRun)"),
            false => format!("{method} {path}"),
        });
        let (path, sub_status) = match path.strip_suffix("/status") {
            Some(p) if has_status(p) => (p, true),
            _ => (path, false),
        };
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match *method {
            Method::GET => match self.objects.get(path) {
                Some(v) => (200, v.clone()),
                None => status(404, "NotFound", format!("{path} not found")),
            },
            Method::POST => {
                let meta = &body["metadata"];
                let name = match (meta["name"].as_str(), meta["generateName"].as_str()) {
                    (Some(n), _) => n.to_owned(),
                    (None, Some(g)) => format!("{g}{}", self.version + 1),
                    (None, None) => return status(422, "Invalid", "metadata.name: Required"),
                };
                let key = format!("{path}/{name}");
                if let Some(ns) = namespace_of(&key).filter(|ns| self.terminating.contains(*ns)) {
                    let (code, mut v) = status(
                        403,
                        "Forbidden",
                        format!(
                            "unable to create new content in namespace {ns} because it is being terminated"
                        ),
                    );
                    v["details"] = json!({"causes": [{"reason": "NamespaceTerminating"}]});
                    return (code, v);
                }
                if self.objects.contains_key(&key) {
                    return status(409, "AlreadyExists", format!("{key} already exists"));
                }
                if let Some(e) = invalid_label(&body) {
                    return status(422, "Invalid", e);
                }
                let mut v = body;
                if dry_run {
                    return (201, v);
                }
                v["metadata"]["name"] = name.into();
                // As a real apiserver does: the namespace comes from the path (a client need
                // not send it, and caches key objects by it).
                if let Some(ns) = namespace_of(&key) {
                    v["metadata"]["namespace"] = ns.into();
                }
                v["metadata"]["uid"] = uuid::Uuid::new_v4().to_string().into();
                v["metadata"]["creationTimestamp"] = self.now().into();
                self.bump(&mut v);
                self.objects.insert(key, v.clone());
                (201, v)
            }
            Method::PATCH => self.patch(path, sub_status, ctype, body),
            Method::DELETE => {
                let Some(mut v) = self.objects.get(path).cloned() else {
                    return status(404, "NotFound", format!("{path} not found"));
                };
                if finalizers(&v).is_empty() {
                    self.objects.remove(path);
                    return (200, v);
                }
                if v["metadata"]["deletionTimestamp"].is_null() {
                    v["metadata"]["deletionTimestamp"] = self.now().into();
                    self.bump(&mut v);
                    self.objects.insert(path.to_owned(), v.clone());
                }
                (200, v)
            }
            _ => status(405, "MethodNotAllowed", method.to_string()),
        }
    }

    fn patch(&mut self, path: &str, sub_status: bool, ctype: &str, body: Value) -> (u16, Value) {
        let apply = ctype.starts_with("application/apply-patch");
        let old = match self.objects.get(path) {
            Some(v) => v.clone(),
            None if apply => {
                let (collection, _) = path.rsplit_once('/').unwrap_or((path, ""));
                return self.handle(&Method::POST, collection, "", body.to_string().as_bytes());
            }
            None => return status(404, "NotFound", format!("{path} not found")),
        };
        let expected = body["metadata"]["resourceVersion"].as_str();
        if expected.is_some() && expected != old["metadata"]["resourceVersion"].as_str() {
            return status(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            );
        }
        let mut new = old.clone();
        if ctype.starts_with("application/json-patch") {
            let Ok(p) = serde_json::from_value::<json_patch::Patch>(body) else {
                return status(400, "BadRequest", "not a JSON patch");
            };
            if let Err(e) = json_patch::patch(&mut new, &p) {
                return status(422, "Invalid", e.to_string());
            }
        } else {
            json_patch::merge(&mut new, &body);
        }
        // What a request may not change: identity, the deletion mark, and the other half of
        // an object with a status subresource.
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
        ] {
            new["metadata"][field] = old["metadata"][field].clone();
        }
        if has_status(path) {
            if sub_status {
                let status = new["status"].take();
                new = old.clone();
                new["status"] = status;
            } else {
                new["status"] = old["status"].clone();
                if new["spec"] != old["spec"] {
                    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                    new["metadata"]["generation"] = (generation + 1).into();
                }
            }
        }
        let deleting = !old["metadata"]["deletionTimestamp"].is_null();
        let before = finalizers(&old);
        if deleting && finalizers(&new).iter().any(|f| !before.contains(f)) {
            return status(
                422,
                "Invalid",
                "metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted",
            );
        }
        if let Some(e) = invalid_label(&new) {
            return status(422, "Invalid", e);
        }
        self.bump(&mut new);
        if deleting && finalizers(&new).is_empty() {
            self.objects.remove(path);
        } else {
            self.objects.insert(path.to_owned(), new.clone());
        }
        (200, new)
    }

    fn take_fault(&mut self, method: &Method, path: &str) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|f| f.method == *method && path.contains(&f.path_contains))?;
        Some(self.faults.remove(i))
    }
}

impl ApiServer {
    /// A kube client whose every request this server answers.
    pub fn client(&self) -> kube::Client {
        let server = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let server = server.clone();
            async move { Ok::<_, Infallible>(server.serve(req).await) }
        });
        kube::Client::new(service, "default")
    }

    async fn serve(&self, req: Request<Body>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = body.collect_bytes().await.unwrap_or_default();
        let ctype = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let path = parts.uri.path();
        let dry_run = parts.uri.query().is_some_and(|q| q.contains("dryRun=All"));
        let (code, value) = {
            let mut state = self.0.lock().expect("apiserver state");
            let write = parts.method != Method::GET;
            let crash = state.crash.as_mut().map(|c| {
                if c.down {
                    return true;
                }
                if write {
                    c.writes_left = c.writes_left.saturating_sub(1);
                    if c.writes_left == 0 {
                        c.down = true;
                        (c.crashed)();
                        return c.before;
                    }
                }
                false
            });
            if crash == Some(true) {
                state.log.push(format!("{} {path} (down)", parts.method));
                let (code, value) = status(503, "ServiceUnavailable", "the process is down");
                return Response::builder()
                    .status(StatusCode::from_u16(code).expect("a status code"))
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Body::from(value.to_string().into_bytes()))
                    .expect("a response");
            }
            match state.take_fault(&parts.method, path) {
                Some(f) => {
                    if f.after {
                        state.handle(&parts.method, path, &ctype, &body);
                    } else {
                        state.log.push(format!("{} {path} (failed)", parts.method));
                    }
                    status(f.code, "InternalError", "injected failure")
                }
                None => state.handle_dry(&parts.method, path, &ctype, &body, dry_run),
            }
        };
        Response::builder()
            .status(StatusCode::from_u16(code).expect("a status code"))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(value.to_string().into_bytes()))
            .expect("a response")
    }

    /// The next `method` request whose path contains `path_contains` fails with `code`,
    /// without taking effect (or, with `after`, having taken effect).
    pub fn fail(&self, method: Method, path_contains: &str, code: u16, after: bool) {
        self.0.lock().unwrap().faults.push(Fault {
            method,
            path_contains: path_contains.into(),
            code,
            after,
        });
    }

    /// Stores `obj` at `path` as is (a resourceVersion is assigned), bypassing every rule.
    pub fn put(&self, path: &str, obj: &impl Serialize) {
        let mut v = serde_json::to_value(obj).expect("serializable");
        let mut state = self.0.lock().unwrap();
        state.bump(&mut v);
        state.objects.insert(path.to_owned(), v);
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Option<T> {
        let state = self.0.lock().unwrap();
        let v = state.objects.get(path)?.clone();
        Some(serde_json::from_value(v).expect("a stored object of that type"))
    }

    /// Changes a stored object in place, as another client would (the resourceVersion moves).
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.0.lock().unwrap();
        let mut v = state.objects.get(path).cloned().expect("a stored object");
        change(&mut v);
        state.bump(&mut v);
        state.objects.insert(path.to_owned(), v);
    }

    pub fn remove(&self, path: &str) {
        self.0.lock().unwrap().objects.remove(path);
    }

    /// The reasons of the Events stored in `namespace`, oldest first.
    pub fn event_reasons(&self, namespace: &str) -> Vec<String> {
        let prefix = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/");
        let state = self.0.lock().unwrap();
        let mut events: Vec<&Value> = state
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
            .collect();
        events.sort_by_key(|v| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
        });
        events
            .iter()
            .filter_map(|v| v["reason"].as_str().map(str::to_owned))
            .collect()
    }

    /// The notes of the Events with `reason` in `namespace`.
    pub fn event_notes(&self, namespace: &str, reason: &str) -> Vec<String> {
        let prefix = format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/");
        let state = self.0.lock().unwrap();
        state
            .objects
            .iter()
            .filter(|(k, v)| k.starts_with(&prefix) && v["reason"] == reason)
            .filter_map(|(_, v)| v["note"].as_str().map(str::to_owned))
            .collect()
    }

    /// Sets the clock that deletion and creation times are read from.
    pub fn set_time(&self, at: chrono::DateTime<chrono::Utc>) {
        self.0.lock().unwrap().clock = Some(at);
    }

    /// Marks `namespace` as being deleted: creations in it are refused from now on.
    pub fn terminate_namespace(&self, namespace: &str) {
        self.0
            .lock()
            .unwrap()
            .terminating
            .insert(namespace.to_owned());
    }

    /// Whether `namespace` is being deleted.
    pub fn namespace_terminating(&self, namespace: &str) -> bool {
        self.0.lock().unwrap().terminating.contains(namespace)
    }

    /// Forgets that `namespace` was being deleted (it is gone, and may be created again).
    pub fn namespace_gone(&self, namespace: &str) {
        self.0.lock().unwrap().terminating.remove(namespace);
    }

    /// Every stored object whose path starts with `prefix`, by path.
    pub fn list(&self, prefix: &str) -> Vec<(String, Value)> {
        let state = self.0.lock().unwrap();
        state
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Creates `obj` in `collection` as a client would; the answer's status code.
    pub fn create(&self, collection: &str, obj: &Value) -> u16 {
        let body = obj.to_string();
        let mut state = self.0.lock().unwrap();
        state
            .handle(&Method::POST, collection, "", body.as_bytes())
            .0
    }

    /// A merge patch as a client would send it (a spec change moves the generation); the
    /// answer's status code.
    pub fn merge(&self, path: &str, patch: &Value) -> u16 {
        let body = patch.to_string();
        let mut state = self.0.lock().unwrap();
        let ctype = "application/merge-patch+json";
        state.handle(&Method::PATCH, path, ctype, body.as_bytes()).0
    }

    /// At the `writes`-th write from now (taking effect, or with `before` not) the server
    /// stops answering anything but 503 until [`ApiServer::recover`]: a process that died
    /// there. `crashed` runs at that moment (the simulation stops Nuclia with it).
    pub fn crash_after(&self, writes: usize, before: bool, crashed: Box<dyn Fn() + Send>) {
        self.0.lock().unwrap().crash = Some(Crash {
            writes_left: writes,
            before,
            crashed,
            down: false,
        });
    }

    /// Whether the armed crash happened; disarms it either way.
    pub fn recover(&self) -> bool {
        self.0.lock().unwrap().crash.take().is_some_and(|c| c.down)
    }

    /// Deletes as a client would (finalizers hold the object, marked deleted).
    pub fn delete(&self, path: &str) {
        self.0
            .lock()
            .unwrap()
            .handle(&Method::DELETE, path, "", b"");
    }

    /// How many requests were made so far.
    pub fn request_count(&self) -> usize {
        self.0.lock().unwrap().log.len()
    }

    /// The requests made after the first `from`, as `METHOD path`.
    pub fn requests_since(&self, from: usize) -> Vec<String> {
        let state = self.0.lock().unwrap();
        state.log.get(from..).unwrap_or_default().to_vec()
    }

    /// Requests made so far whose `METHOD path` contains `needle`.
    pub fn requests(&self, needle: &str) -> Vec<String> {
        let state = self.0.lock().unwrap();
        state
            .log
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}
