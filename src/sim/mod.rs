//! The PBX simulator.
