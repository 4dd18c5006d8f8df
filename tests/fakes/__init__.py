"""Local fakes of outside services (SendGrid), shared by tests and benchmarks."""
