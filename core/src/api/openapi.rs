//! The OpenAPI 3 document of the server API, generated from the route and body types
//! (committed as docs/openapi.json; core/tests/generated.rs checks it has not drifted).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{reads, reply, routes, sessions};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wsguard server API",
        description = "ServerHandle's operations over HTTP (`[api]`). Every error answer is `{\"error\":{\"code\",\"name\",\"message\"}}` with a code from docs/ERROR_CODES.md; see docs/API.md.",
        license(name = "Apache-2.0")
    ),
    paths(
        routes::publish,
        routes::broadcast,
        routes::disconnect,
        sessions::send,
        sessions::subscribe,
        sessions::unsubscribe,
        sessions::sessions,
        sessions::channels,
        reads::history,
        reads::presence,
        reads::presence_stats,
        routes::revoke,
        routes::ban,
        routes::unban,
        routes::bans,
        routes::stats,
        routes::reload,
    ),
    components(schemas(reply::ErrorBody, reply::ErrorDetail, reply::ProblemBody)),
    modifiers(&BearerKey),
    security(("api_key" = []))
)]
struct ApiDoc;

/// `Authorization: Bearer <key>`.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A key from `api.key_env` or `api.keys`."))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON (what docs/openapi.json holds).
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
