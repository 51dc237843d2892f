//! A request's URL parameters, as ClickHouse reads them: the last value
//! of a name wins.
//!
//! Owns: [`Params`] and [`param`]. Must not: interpret any parameter
//! (`auth` reads the credentials, the door the settings).

/// The URL's `name=value` pairs, in order.
pub(super) type Params = Vec<(String, String)>;

/// The last value given for `name`.
pub(super) fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
