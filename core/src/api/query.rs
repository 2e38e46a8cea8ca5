//! Query parameters of the GET endpoints, read as strictly as POST bodies: each parameter at
//! most once, none the endpoint does not know, each value of its type — otherwise
//! `api_invalid_parameter` (400) and nothing is read.

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::http::Uri;

use super::reply::ApiError;
use crate::error::ErrorCode;

/// The parameters of one request, taken one by one; [`Query::finish`] refuses the rest.
pub(crate) struct Query {
    pairs: BTreeMap<String, String>,
}

impl Query {
    /// Splits `uri`'s query (percent-decoded); a parameter named twice is refused.
    pub(crate) fn parse(uri: &Uri) -> Result<Query, ApiError> {
        let mut pairs = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
            if pairs.insert(name.to_string(), value.to_string()).is_some() {
                return Err(invalid(format!("query parameter {name:?} is given twice")));
            }
        }
        Ok(Query { pairs })
    }

    /// A text parameter.
    pub(crate) fn text(&mut self, name: &str) -> Option<String> {
        self.pairs.remove(name)
    }

    /// A parameter of type `T` (a number, a boolean).
    pub(crate) fn parsed<T: FromStr>(&mut self, name: &str) -> Result<Option<T>, ApiError> {
        self.pairs
            .remove(name)
            .map(|value| {
                value.parse::<T>().map_err(|_| invalid(format!("query parameter {name}: {value:?} does not parse")))
            })
            .transpose()
    }

    /// Refuses any parameter the endpoint did not take.
    pub(crate) fn finish(self) -> Result<(), ApiError> {
        match self.pairs.keys().next() {
            Some(name) => Err(invalid(format!("unknown query parameter {name:?}"))),
            None => Ok(()),
        }
    }
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorCode::ApiInvalidParameter, message)
}
