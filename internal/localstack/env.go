package localstack

import "github.com/cropq/cropq/internal/localsvc"

// Endpoints are what a cropq process of a stack talks to.
type Endpoints struct {
	Redis  *localsvc.Redis
	MinIO  *localsvc.MinIO
	Bucket string
	// APIURL is the emulator of the Image Cropping API (never the paid
	// API), which accepts AppKey and AppSecret.
	APIURL, AppKey, AppSecret string
}

// Env is the environment of a cropq process (worker, api, enqueue…) of
// the stack, then extra (the last value of a name wins): its Redis and
// MinIO, the emulator with results over plain http from this machine,
// images served on this machine, a free ops port so that several workers
// can run side by side, and a short shutdown.
func (e Endpoints) Env(extra ...string) []string {
	env := []string{
		"CROPQ_REDIS_URL=" + e.Redis.URL(),
		"CROPQ_API_BASE_URL=" + e.APIURL,
		"CROPQ_APP_KEY=" + e.AppKey, "CROPQ_APP_SECRET=" + e.AppSecret,
		"CROPQ_S3_ENDPOINT=" + e.MinIO.Endpoint(), "CROPQ_S3_BUCKET=" + e.Bucket,
		"AWS_ACCESS_KEY_ID=" + e.MinIO.AccessKey(), "AWS_SECRET_ACCESS_KEY=" + e.MinIO.SecretKey(),
		"CROPQ_SHUTDOWN_TIMEOUT=5s", "CROPQ_WORKER_ADDR=127.0.0.1:0",
		"CROPQ_RESULT_HOSTS=127.0.0.1", "CROPQ_RESULT_ALLOW_HTTP=true", "CROPQ_ALLOW_PRIVATE_IMAGE_URLS=true",
		// Tests and benchmarks crop one sample over and over and count paid
		// calls; those of result reuse turn it on.
		"CROPQ_DEDUP_SCOPE=off",
	}
	return append(env, extra...)
}
