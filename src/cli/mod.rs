//! The `pgsched` binary's own modules, not part of the library: how the commands show what
//! they did to a person. The library hands back data (which `--output json` prints as it is);
//! the columns, colours and wording of the text output are the command line's business, so
//! they live with the binary. So does reading what only the command line takes from files:
//! `pgsched trigger --params-file`'s parameter sets.

pub mod params_file;
pub mod report;
pub mod tables;
