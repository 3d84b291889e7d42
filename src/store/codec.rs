//! How the model's enums are stored: as their spelling (`as_str`), read
//! back with `FromStr`; a spelling the model does not know is corrupt data.

use rusqlite::ToSql;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};

use crate::model::{Direction, MessageKind, ParentStatus, ParticipantRole, Route, ScStatus};

macro_rules! spelled_sql {
    ($($t:ty),+) => {$(
        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                value
                    .as_str()?
                    .parse()
                    .map_err(|e: String| FromSqlError::Other(e.into()))
            }
        }
    )+};
}

spelled_sql!(
    ScStatus,
    ParentStatus,
    Direction,
    MessageKind,
    Route,
    ParticipantRole
);
