"""The S3 target: any S3-compatible store (AWS S3, R2, MinIO, SeaweedFS, ...)."""
