//! Little-endian field access for the `#[repr(C, packed)]` boot structures. Offsets come
//! from `offset_of!` on the structs, so the layout asserts also cover serialisation.
//! Out-of-range accesses read zeros and write nothing: callers check lengths first, and
//! a mistake here must not panic on a guest's or an image's bytes.

pub(super) trait Le: Copy {
    const SIZE: usize;
    fn read(bytes: &[u8], offset: usize) -> Self;
    fn write(self, bytes: &mut [u8], offset: usize);
}

macro_rules! impl_le {
    ($($t:ty),*) => {$(
        impl Le for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn read(bytes: &[u8], offset: usize) -> Self {
                let mut raw = [0u8; core::mem::size_of::<$t>()];
                if let Some(src) = offset.checked_add(Self::SIZE).and_then(|end| bytes.get(offset..end)) {
                    raw.copy_from_slice(src);
                }
                <$t>::from_le_bytes(raw)
            }
            fn write(self, bytes: &mut [u8], offset: usize) {
                if let Some(dst) = offset.checked_add(Self::SIZE).and_then(|end| bytes.get_mut(offset..end)) {
                    dst.copy_from_slice(&self.to_le_bytes());
                }
            }
        }
    )*};
}
impl_le!(u8, u16, u32, u64);

/// Implements `read_le`/`write_le` for the listed integer fields of a packed struct.
macro_rules! le_fields {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl $name {
            /// Reads the fields from `bytes` (the struct's first byte at `bytes[0]`).
            pub fn read_le(bytes: &[u8]) -> Self {
                use $crate::vm::linux::le::Le;
                let mut s = Self::default();
                $( s.$field = Le::read(bytes, core::mem::offset_of!($name, $field)); )*
                s
            }
            /// Writes the fields into `bytes` (the struct's first byte at `bytes[0]`).
            pub fn write_le(&self, bytes: &mut [u8]) {
                use $crate::vm::linux::le::Le;
                $( { let v = self.$field; v.write(bytes, core::mem::offset_of!($name, $field)); } )*
            }
        }
    };
}
pub(super) use le_fields;
