//! SendGrid's contact identifiers, and the set of them a contact carries.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A SendGrid contact identifier: every contact carries at least one.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Deserialize,
    Serialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Identifier {
    /// The email address (lower-cased by SendGrid).
    #[default]
    Email,
    /// A phone number identifier.
    PhoneNumberId,
    /// The contact's id in your own systems.
    ExternalId,
    /// An id for a visitor not yet known by name.
    AnonymousId,
}

impl Identifier {
    /// In SendGrid's field order.
    pub const ALL: [Identifier; 4] = [
        Self::Email,
        Self::PhoneNumberId,
        Self::ExternalId,
        Self::AnonymousId,
    ];

    /// The reserved field's name, as the contacts API and its identifier search spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::PhoneNumberId => "phone_number_id",
            Self::ExternalId => "external_id",
            Self::AnonymousId => "anonymous_id",
        }
    }

    /// The identifier a reserved field name is, if it is one.
    pub fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// Which identifiers a contact carried, as a set: the state remembers it per contact so
/// that no later update leaves one out (SendGrid refuses an update without all of a
/// contact's identifiers). Empty means not known (state written before it was kept).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IdentifierSet(u8);

impl IdentifierSet {
    fn bit(identifier: Identifier) -> u8 {
        1 << (identifier as u8)
    }

    pub fn insert(&mut self, identifier: Identifier) {
        self.0 |= Self::bit(identifier);
    }

    pub fn contains(self, identifier: Identifier) -> bool {
        self.0 & Self::bit(identifier) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The identifiers of `self` that `other` lacks.
    pub fn missing_from(self, other: IdentifierSet) -> IdentifierSet {
        IdentifierSet(self.0 & !other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Identifier> {
        Identifier::ALL
            .into_iter()
            .filter(move |i| self.contains(*i))
    }

    /// The set as one byte (its own encoding in the run journal).
    pub fn bits(self) -> u8 {
        self.0
    }

    /// The set a byte of [`IdentifierSet::bits`] encodes; unknown bits are dropped.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits & 0b1111)
    }

    /// Names joined by `,` (`email,external_id`), as the snapshot stores the set.
    pub fn to_names(self) -> String {
        self.iter()
            .map(Identifier::name)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The set [`IdentifierSet::to_names`] wrote; unknown names are dropped.
    pub fn from_names(names: &str) -> Self {
        let mut set = Self::default();
        for identifier in names.split(',').filter_map(Identifier::named) {
            set.insert(identifier);
        }
        set
    }
}

impl FromIterator<Identifier> for IdentifierSet {
    fn from_iter<I: IntoIterator<Item = Identifier>>(iter: I) -> Self {
        let mut set = Self::default();
        for identifier in iter {
            set.insert(identifier);
        }
        set
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
