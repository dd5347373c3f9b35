"""rsql-cloud: deploy and drive the rsql-agent cloud side; the local emulator."""
