//! Internally tagged objects of the job spec (`"model": {"algorithm": "mlp", ...}`), read so an
//! error points at the field that caused it.
//!
//! serde's derived `#[serde(tag = "...")]` buffers the whole object before it picks the variant,
//! so an unknown or mistyped field inside it is reported at the object's closing brace, and the
//! message does not say which object. Here the variant's own struct (with
//! `deny_unknown_fields`) is deserialized from the map as it streams past, after the tag: serde_json
//! then positions each error at its field, and an unknown field is named by its path
//! (`model.hiden`). The tag usually comes first; fields before it are checked against every
//! variant's fields at once (a typo is no variant's field, so it is still reported where it is)
//! and kept until the tag says which struct they belong to.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};

/// An enum stored as a JSON object whose [`Tagged::TAG`] field names the variant; the other
/// fields are the variant's struct.
pub(crate) trait Tagged: Sized {
    /// Where the object sits in the spec, for messages (`model`, `training.optimizer`).
    const PATH: &'static str;
    /// The field that names the variant.
    const TAG: &'static str;
    /// The variants' names, as serialized.
    const VARIANTS: &'static [&'static str];

    /// Deserializes the struct of variant `name` (one of [`Tagged::VARIANTS`]) from `fields`.
    fn variant<'de, D: Deserializer<'de>>(name: &str, fields: D) -> Result<Self, D::Error>;
}

/// Deserializes a [`Tagged`] enum from a JSON object, field by field.
pub(crate) fn deserialize<'de, T: Tagged, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_map(TaggedVisitor(PhantomData))
}

struct TaggedVisitor<T>(PhantomData<T>);

impl<'de, T: Tagged> Visitor<'de> for TaggedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object with the field `{}`", T::TAG)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut before_tag = Vec::new();
        let name = loop {
            let Some(key) = map.next_key::<String>()? else {
                return Err(de::Error::custom(format!(
                    "{}: missing field `{}`, one of {}",
                    T::PATH,
                    T::TAG,
                    quoted(T::VARIANTS)
                )));
            };
            if key == T::TAG {
                let name: String = map.next_value()?;
                if !T::VARIANTS.contains(&name.as_str()) {
                    return Err(de::Error::custom(format!(
                        "{}.{}: unknown {} `{name}`, expected one of {}",
                        T::PATH,
                        T::TAG,
                        T::TAG,
                        quoted(T::VARIANTS)
                    )));
                }
                break name;
            }
            let every = every_field::<T>();
            if !every.contains(&key.as_str()) {
                return Err(de::Error::custom(format!(
                    "{}.{key}: unknown field, expected `{}` or one of {}",
                    T::PATH,
                    T::TAG,
                    quoted(&every)
                )));
            }
            let value: serde_json::Value = map.next_value()?;
            before_tag.push((key, value));
        };
        let allowed = fields::<T>(&name);
        if let Some((key, _)) = before_tag
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            return Err(unknown_field::<T, A::Error>(key, &name, allowed));
        }
        T::variant(
            &name,
            de::value::MapAccessDeserializer::new(VariantFields {
                before_tag: before_tag.into_iter(),
                pending: None,
                map,
                name: &name,
                allowed,
                tagged: PhantomData::<T>,
            }),
        )
    }
}

/// The fields of variant `name`'s struct, without the tag: first those read before the tag, then
/// the rest of the object as it streams; a field the struct does not take is refused by path.
struct VariantFields<'n, A, T> {
    before_tag: std::vec::IntoIter<(String, serde_json::Value)>,
    /// The value of the key just handed out from `before_tag`.
    pending: Option<(String, serde_json::Value)>,
    map: A,
    name: &'n str,
    allowed: &'static [&'static str],
    tagged: PhantomData<T>,
}

impl<'de, A: MapAccess<'de>, T: Tagged> MapAccess<'de> for VariantFields<'_, A, T> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let key = match self.before_tag.next() {
            Some((key, value)) => {
                self.pending = Some((key.clone(), value));
                key
            }
            None => {
                let Some(key) = self.map.next_key::<String>()? else {
                    return Ok(None);
                };
                if key == T::TAG {
                    return Err(de::Error::custom(format!(
                        "{}.{}: given twice",
                        T::PATH,
                        T::TAG
                    )));
                }
                if !self.allowed.contains(&key.as_str()) {
                    return Err(unknown_field::<T, A::Error>(&key, self.name, self.allowed));
                }
                key
            }
        };
        seed.deserialize(key.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.pending.take() {
            // A value kept as JSON has lost its position, so the message names the field.
            Some((key, value)) => seed
                .deserialize(value)
                .map_err(|e| de::Error::custom(format!("{}.{key}: {e}", T::PATH))),
            None => self.map.next_value_seed(seed),
        }
    }
}

fn unknown_field<T: Tagged, E: de::Error>(key: &str, name: &str, allowed: &[&str]) -> E {
    E::custom(format!(
        "{}.{key}: unknown field for {} `{name}`, expected one of {}",
        T::PATH,
        T::TAG,
        quoted(allowed)
    ))
}

fn quoted(names: &[&str]) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    names.join(", ")
}

/// Every field some variant takes, in variant order, without repeats.
fn every_field<T: Tagged>() -> Vec<&'static str> {
    let mut every: Vec<&'static str> = Vec::new();
    for field in T::VARIANTS.iter().flat_map(|v| fields::<T>(v)) {
        if !every.contains(field) {
            every.push(field);
        }
    }
    every
}

/// The fields variant `name`'s struct takes, as its derived `Deserialize` lists them to
/// `deserialize_struct` — so the list cannot drift from the struct.
fn fields<T: Tagged>(name: &str) -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always fails: it only records what it was asked for.
    let _ = T::variant(name, FieldsProbe(&mut fields));
    fields
}

struct FieldsProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldsProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom(
            "a variant of a tagged object must be a struct",
        ))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}
