"""The wire contract of Lantern: pure pydantic v2, shared by the API and the workers."""
