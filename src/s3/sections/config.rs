//! [`BucketConfig`]: the values of a bucket's sections, one slot per managed (desired) or read
//! (live) section. The slots are type-erased so one map holds every section; typed access goes
//! through [`BucketConfig::get`] and [`BucketConfig::set`] with the section's type. Pure; may call
//! only the [`Section`] trait of the sections.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

use super::{Field, Section};

/// Bucket configuration: a value for each managed (desired) or read (live) section. A section
/// without a value is not managed: gitopsd neither reads nor writes it.
#[derive(Clone, Default, PartialEq)]
pub struct BucketConfig {
    slots: BTreeMap<Field, Slot>,
}

impl BucketConfig {
    /// Whether the field is managed (desired) / was read (live).
    pub fn has(&self, field: Field) -> bool {
        self.slots.contains_key(&field)
    }

    /// The managed fields, in apply order.
    pub fn fields(&self) -> Vec<Field> {
        self.slots.keys().copied().collect()
    }

    /// Whether `field` has the same value in both configurations (both unmanaged counts as same).
    pub fn same(&self, other: &BucketConfig, field: Field) -> bool {
        match (self.slots.get(&field), other.slots.get(&field)) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same(b),
            _ => false,
        }
    }

    /// The field as a JSON value in the spec's shape (`None` when not managed / not read).
    pub fn field_value(&self, field: Field) -> Option<Value> {
        self.slots.get(&field).map(Slot::to_json)
    }

    /// The managed fields as one JSON mapping (for display).
    pub fn to_value(&self) -> Value {
        let map: Map<String, Value> = self
            .slots
            .iter()
            .map(|(f, slot)| (f.name().to_string(), slot.to_json()))
            .collect();
        Value::Object(map)
    }

    /// Copies `field` from `other` (absent there: absent here).
    pub fn copy_field(&mut self, other: &BucketConfig, field: Field) {
        match other.slots.get(&field) {
            Some(slot) => self.slots.insert(field, slot.clone()),
            None => self.slots.remove(&field),
        };
    }

    /// Stops managing `field`.
    pub fn remove(&mut self, field: Field) {
        self.slots.remove(&field);
    }

    /// The value of section `S`.
    pub fn get<S: Section>(&self) -> Option<&S::Value> {
        self.slots.get(&S::FIELD)?.get::<S>()
    }

    /// The value of section `S`, to change it in place.
    pub fn get_mut<S: Section>(&mut self) -> Option<&mut S::Value> {
        self.slots.get_mut(&S::FIELD)?.get_mut::<S>()
    }

    /// Sets (and so manages) section `S`.
    pub fn set<S: Section>(&mut self, value: S::Value) {
        self.slots.insert(S::FIELD, Slot::new::<S>(value));
    }

    /// Builder form of [`BucketConfig::set`].
    pub fn with<S: Section>(mut self, value: S::Value) -> BucketConfig {
        self.set::<S>(value);
        self
    }

    pub(crate) fn slot(&self, field: Field) -> Option<&Slot> {
        self.slots.get(&field)
    }

    pub(crate) fn insert(&mut self, field: Field, slot: Slot) {
        self.slots.insert(field, slot);
    }
}

impl fmt::Debug for BucketConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.slots.iter().map(|(k, v)| (k.name(), v)))
            .finish()
    }
}

impl serde::Serialize for BucketConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

/// The value of one section, whatever its type.
pub(crate) struct Slot(Box<dyn AnyValue>);

impl Slot {
    pub(crate) fn new<S: Section>(value: S::Value) -> Slot {
        Slot(Box::new(Typed::<S>(value)))
    }

    pub(crate) fn get<S: Section>(&self) -> Option<&S::Value> {
        self.0.as_any().downcast_ref::<Typed<S>>().map(|t| &t.0)
    }

    fn get_mut<S: Section>(&mut self) -> Option<&mut S::Value> {
        self.0
            .as_any_mut()
            .downcast_mut::<Typed<S>>()
            .map(|t| &mut t.0)
    }

    fn same(&self, other: &Slot) -> bool {
        self.0.same(other.0.as_ref())
    }

    fn to_json(&self) -> Value {
        self.0.to_json()
    }
}

impl Clone for Slot {
    fn clone(&self) -> Slot {
        Slot(self.0.clone_box())
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.same(other)
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_debug(f)
    }
}

/// A section value with its section, so it knows how to compare and show itself.
struct Typed<S: Section>(S::Value);

trait AnyValue: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clone_box(&self) -> Box<dyn AnyValue>;
    fn same(&self, other: &dyn AnyValue) -> bool;
    fn to_json(&self) -> Value;
    fn fmt_debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result;
}

impl<S: Section> AnyValue for Typed<S> {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn clone_box(&self) -> Box<dyn AnyValue> {
        Box::new(Typed::<S>(self.0.clone()))
    }
    fn same(&self, other: &dyn AnyValue) -> bool {
        other
            .as_any()
            .downcast_ref::<Typed<S>>()
            .is_some_and(|o| S::same(&self.0, &o.0))
    }
    fn to_json(&self) -> Value {
        S::to_json(&self.0)
    }
    fn fmt_debug(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
