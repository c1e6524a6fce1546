//! Typed client for the Nuclia HTTP API (`shared/nuclia-api.md`).
//!
//! - [`ApiToken`] / [`Credential`]: secret values with redacted `Debug`/`Display`, and the
//!   header each kind of credential is sent with.
//! - [`Endpoints`]: the global base URL, the regional template and per-zone origins; it also
//!   turns a KB URL into a [`KbLocation`] and refuses URLs that point anywhere else.
//! - [`Client`]: one method per API call the operator needs, with a timeout on every request,
//!   a rate limit per credential shared fairly between namespaces ([`fair`]), and errors
//!   classified into [`Error`].
//! - [`time`]: dates are sent as RFC 3339 UTC and parsed tolerantly.
//! - [`scrub`]: removes credentials from text quoted from an answer before it is kept in an
//!   [`Error`] (and so before it reaches a status, an Event or a log).

mod client;
mod endpoints;
mod error;
pub mod fair;
mod redact;
pub mod time;
mod token;
mod types;

pub use client::{ApiObserver, Client, ClientConfig};
pub use endpoints::{Endpoints, KbLocation};
pub use error::Error;
pub use redact::{REDACTED, scrub};
pub use token::{ApiToken, Credential};
pub use types::{
    Account, AuthorizerInfo, AuthorizerUser, CreatedKey, CreatedToken, KbConfig, KbObject, KbRole,
    KbSummary, KnowledgeBox, PersonalTokenItem, ServiceAccount, ServiceAccountKey, UserProfile,
    Zone,
};
pub use types::{CreatedNuaClient, NuaClient, NuaClientCreation};
