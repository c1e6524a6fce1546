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

/// The CRD group whose objects have a status subresource (the engine tests' kind).
const STATUS_GROUP: &str = "/apis/test.nuclia.dev/";

#[derive(Clone, Default)]
pub struct ApiServer(Arc<Mutex<State>>);

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    version: u64,
    faults: Vec<Fault>,
    /// Every request, as `METHOD path`.
    log: Vec<String>,
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl State {
    fn bump(&mut self, v: &mut Value) {
        self.version += 1;
        v["metadata"]["resourceVersion"] = self.version.to_string().into();
    }

    fn handle(&mut self, method: &Method, path: &str, ctype: &str, body: &[u8]) -> (u16, Value) {
        self.log.push(format!("{method} {path}"));
        let (path, sub_status) = match path.strip_suffix("/status") {
            Some(p) if p.starts_with(STATUS_GROUP) => (p, true),
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
                if self.objects.contains_key(&key) {
                    return status(409, "AlreadyExists", format!("{key} already exists"));
                }
                let mut v = body;
                v["metadata"]["name"] = name.into();
                v["metadata"]["uid"] = uuid::Uuid::new_v4().to_string().into();
                v["metadata"]["creationTimestamp"] = now().into();
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
                    v["metadata"]["deletionTimestamp"] = now().into();
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
        if path.starts_with(STATUS_GROUP) {
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
        let (code, value) = {
            let mut state = self.0.lock().expect("apiserver state");
            match state.take_fault(&parts.method, path) {
                Some(f) => {
                    if f.after {
                        state.handle(&parts.method, path, &ctype, &body);
                    } else {
                        state.log.push(format!("{} {path} (failed)", parts.method));
                    }
                    status(f.code, "InternalError", "injected failure")
                }
                None => state.handle(&parts.method, path, &ctype, &body),
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
