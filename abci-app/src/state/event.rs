//! Typed events: what changed, for gateways and CLIs to subscribe to and index. Kinds and
//! attribute keys come from [`crate::events`].

use crate::events::EventKind;

/// One ABCI event: a dotted kind (`nrc.transfer`) and ordered attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Event type, `<domain>.<what happened>`.
    pub kind: EventKind,
    /// Attributes in a fixed order (all indexed by CometBFT).
    pub attributes: Vec<(String, String)>,
}

impl Event {
    /// A new event of `kind` with no attributes.
    pub fn new(kind: EventKind) -> Self {
        Event {
            kind,
            attributes: Vec::new(),
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, key: &str, value: impl ToString) -> Self {
        self.attributes.push((key.to_owned(), value.to_string()));
        self
    }

    /// The value of attribute `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
