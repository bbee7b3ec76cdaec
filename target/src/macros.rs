//! Small declarative helpers shared by the wire modules.

/// Declares a `u8`-coded protocol enum with an `Unknown(u8)` fallback.
///
/// Protocol code points (opcodes, PDU types, log page identifiers...) arrive
/// from the network, so decoding must be total: every byte maps to a value,
/// and `from_u8(x).as_u8() == x` for every `x`. Named variants exist only for
/// the code points this crate knows; the rest are preserved in `Unknown`.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A code point this crate does not name (kept verbatim).
            Unknown(u8),
        }

        impl $name {
            /// Decodes a code point; never fails.
            pub const fn from_u8(value: u8) -> Self {
                match value {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The code point as sent on the wire.
            pub const fn as_u8(self) -> u8 {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(other) => other,
                }
            }
        }

        impl From<u8> for $name {
            fn from(value: u8) -> Self {
                Self::from_u8(value)
            }
        }

        impl From<$name> for u8 {
            fn from(value: $name) -> u8 {
                value.as_u8()
            }
        }
    };
}
