//! The operator's Kubernetes client: kube's default stack (kubeconfig or in-cluster config)
//! with one layer that counts every request by verb and resource
//! (`nuclia_operator_kube_requests_total`). The apiserver's own counters mix every client;
//! these say what this operator asks of it.

use std::sync::Arc;

use kube::client::{Body, ClientBuilder};

use super::metrics::Metrics;

/// Connects as `kube::Client::try_default` does, counting requests into `metrics`.
pub async fn client(metrics: Arc<Metrics>) -> kube::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let count = tower::util::MapRequestLayer::new(move |request: http::Request<Body>| {
        let (verb, resource) = classify(
            request.method(),
            request.uri().path(),
            request.uri().query().unwrap_or(""),
        );
        metrics.kube_request(verb, &resource);
        request
    });
    Ok(ClientBuilder::try_from(config)?.with_layer(&count).build())
}

/// The Kubernetes verb and resource (`secrets`, `nucliapersonaltokens/status`) of a request,
/// from its method and path; `("other", "other")` for what is not a resource path (discovery,
/// `/version`).
pub fn classify(method: &http::Method, path: &str, query: &str) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return ("other", "other".into()),
    };
    let (resource, named) = match rest {
        // namespaces/<ns>/<resource>[/<name>[/<subresource>]]
        ["namespaces", _ns, resource, named @ ..] => (*resource, named),
        // <resource>[/<name>[/<subresource>]] (namespaces/<name> included)
        [resource, named @ ..] => (*resource, named),
        [] => return ("other", "other".into()),
    };
    let resource = match named {
        [_name, sub, ..] => format!("{resource}/{sub}"),
        _ => resource.to_owned(),
    };
    let has_name = !named.is_empty();
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if has_name => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if has_name => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn requests_are_classified_by_verb_and_resource() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets/login",
                "",
                ("get", "secrets"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets",
                "labelSelector=x",
                ("list", "secrets"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets",
                "watch=true&resourceVersion=5",
                ("watch", "secrets"),
            ),
            (
                Method::GET,
                "/api/v1/secrets",
                "limit=500",
                ("list", "secrets"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/kube-system",
                "",
                ("get", "namespaces"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/a/events",
                "",
                ("create", "events"),
            ),
            (
                Method::PATCH,
                "/apis/nuclia.dev/v1alpha1/namespaces/a/nucliapersonaltokens/t/status",
                "",
                ("patch", "nucliapersonaltokens/status"),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                "",
                ("update", "leases"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/secrets/s",
                "",
                ("delete", "secrets"),
            ),
            (Method::GET, "/version", "", ("other", "other")),
            (Method::GET, "/apis", "", ("other", "other")),
        ];
        for (method, path, query, (verb, resource)) in cases {
            assert_eq!(
                classify(&method, path, query),
                (verb, resource.to_owned()),
                "{method} {path}?{query}"
            );
        }
    }
}
