-- One database per service: no service reads another's tables (ARCHITECTURE.md).
CREATE DATABASE socialrx_referral_intake;
CREATE DATABASE socialrx_directory;
CREATE DATABASE socialrx_outcomes;
CREATE DATABASE socialrx_funding_ledger;
