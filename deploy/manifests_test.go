package deploy_test

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/cropq/cropq/internal/testenv"
)

// envNames is every variable the cropq binary reads (`cropq env --names`).
func envNames(t *testing.T) map[string]bool {
	t.Helper()
	testenv.Needs(t, "a build of cropq (go run)")
	cmd := exec.Command("go", "run", "./cmd/cropq", "env", "--names")
	cmd.Dir = ".."
	out, err := cmd.Output()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, n := range strings.Fields(string(out)) {
		names[n] = true
	}
	require.Contains(t, names, "CROPQ_REDIS_URL")
	return names
}

// scaledObject is KEDA's keda.sh/v1alpha1 ScaledObject, as far as cropq
// uses it, decoded strictly: a misspelt field fails here instead of being
// ignored by the cluster. Field names follow KEDA's published CRD.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// rendered is one kustomize build, decoded into the real API types.
type rendered struct {
	deployments  []appsv1.Deployment
	statefulSets []appsv1.StatefulSet
	configMaps   []corev1.ConfigMap
	secrets      []corev1.Secret
	services     []corev1.Service
	scaled       []scaledObject
	kinds        map[string]int
}

func render(t *testing.T, dir string) rendered {
	t.Helper()
	resMap, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	require.NoError(t, err, "kustomize build %s", dir)
	out := rendered{kinds: map[string]int{}}
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		require.NoError(t, err)
		kind := res.GetKind()
		out.kinds[kind]++
		strict := func(v any) {
			require.NoError(t, yaml.UnmarshalStrict(y, v), "%s %s in %s:\n%s", kind, res.GetName(), dir, y)
		}
		switch kind {
		case "Deployment":
			var d appsv1.Deployment
			strict(&d)
			out.deployments = append(out.deployments, d)
		case "StatefulSet":
			var s appsv1.StatefulSet
			strict(&s)
			out.statefulSets = append(out.statefulSets, s)
		case "ConfigMap":
			var c corev1.ConfigMap
			strict(&c)
			out.configMaps = append(out.configMaps, c)
		case "Secret":
			var s corev1.Secret
			strict(&s)
			out.secrets = append(out.secrets, s)
		case "Service":
			var svc corev1.Service
			strict(&svc)
			out.services = append(out.services, svc)
		case "Namespace":
			strict(&corev1.Namespace{})
		case "PodDisruptionBudget":
			strict(&policyv1.PodDisruptionBudget{})
		case "NetworkPolicy":
			strict(&networkingv1.NetworkPolicy{})
		case "HorizontalPodAutoscaler":
			strict(&autoscalingv2.HorizontalPodAutoscaler{})
		case "ScaledObject":
			var so scaledObject
			strict(&so)
			assert.Equal(t, "keda.sh/v1alpha1", so.APIVersion)
			out.scaled = append(out.scaled, so)
		default:
			t.Errorf("%s: unexpected kind %s (add it to this test with its API type)", dir, kind)
		}
	}
	return out
}

func podSpecs(r rendered) map[string]corev1.PodSpec {
	specs := map[string]corev1.PodSpec{}
	for _, d := range r.deployments {
		specs["Deployment/"+d.Name] = d.Spec.Template.Spec
	}
	for _, s := range r.statefulSets {
		specs["StatefulSet/"+s.Name] = s.Spec.Template.Spec
	}
	return specs
}

func TestKustomizeOverlays(t *testing.T) {
	names := envNames(t)
	for _, dir := range []string{"k8s/base", "k8s/overlays/dev", "k8s/overlays/prod"} {
		t.Run(dir, func(t *testing.T) {
			r := render(t, dir)
			require.Len(t, r.configMaps, 1)
			cfg := r.configMaps[0].Data
			for _, kind := range []string{"Namespace", "ConfigMap", "Secret", "Deployment", "Service", "ScaledObject", "PodDisruptionBudget", "NetworkPolicy"} {
				assert.Positive(t, r.kinds[kind], "%s renders a %s", dir, kind)
			}

			// The env the manifests give cropq is exactly what it reads.
			for k := range cfg {
				assert.True(t, names[k], "ConfigMap sets %s, which cropq does not read", k)
			}
			for _, s := range r.secrets {
				for k := range s.StringData {
					assert.True(t, names[k], "Secret sets %s, which cropq does not read", k)
				}
			}

			for name, spec := range podSpecs(r) {
				for _, c := range spec.Containers {
					where := name + "/" + c.Name
					assert.False(t, c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero(), "%s has requests", where)
					assert.False(t, c.Resources.Limits.Memory().IsZero(), "%s has a memory limit", where)
					assert.NotNil(t, c.LivenessProbe, "%s has a liveness probe", where)
					assert.NotNil(t, c.ReadinessProbe, "%s has a readiness probe", where)
					img := c.Image
					assert.True(t, strings.Contains(img[strings.LastIndex(img, "/")+1:], ":"), "%s: image %q has a tag", where, img)
					assert.False(t, strings.HasSuffix(img, ":latest"), "%s: image %q is not :latest", where, img)
					if strings.Contains(img, "cropq") {
						for _, e := range c.Env {
							assert.True(t, names[e.Name], "%s sets %s, which cropq does not read", where, e.Name)
						}
						sc := c.SecurityContext
						require.NotNil(t, sc, where)
						assert.True(t, *sc.ReadOnlyRootFilesystem, "%s: read-only root filesystem", where)
						assert.True(t, *spec.SecurityContext.RunAsNonRoot, "%s: non-root", where)
					}
				}
			}

			checkAPIMetricsPort(t, r, cfg)

			// The worker outlives its own shutdown timeout.
			var worker *appsv1.Deployment
			for i := range r.deployments {
				if r.deployments[i].Name == "cropq-worker" {
					worker = &r.deployments[i]
				}
			}
			require.NotNil(t, worker)
			shutdown, err := time.ParseDuration(cfg["CROPQ_SHUTDOWN_TIMEOUT"])
			require.NoError(t, err, "the ConfigMap sets CROPQ_SHUTDOWN_TIMEOUT")
			grace := time.Duration(*worker.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
			assert.Greater(t, grace, shutdown+5*time.Second, "terminationGracePeriodSeconds leaves room after the drain")

			// KEDA scales on the backlog the workers export, by a metric
			// name the binary really exports.
			require.Len(t, r.scaled, 1)
			so := r.scaled[0]
			assert.Equal(t, "cropq-worker", so.Spec.ScaleTargetRef.Name)
			require.Len(t, so.Spec.Triggers, 1)
			trig := so.Spec.Triggers[0]
			assert.Equal(t, "prometheus", trig.Type)
			assert.NotEmpty(t, trig.Metadata["serverAddress"])
			assert.NotEmpty(t, trig.Metadata["threshold"])
			checkExprs(t, "KEDA", []string{trig.Metadata["query"]}, exported(t))
			assert.Contains(t, trig.Metadata["query"], "cropq_backlog_requests_total", "scaled on the backlog, not on asynq's fed window")
			assert.Less(t, *so.Spec.MinReplicaCount, *so.Spec.MaxReplicaCount)
		})
	}
}

// checkAPIMetricsPort: Prometheus scrapes the API on CROPQ_API_METRICS_ADDR
// (its /metrics without a token), not on the API's port, where /metrics
// needs an operator's token; no Service exposes the metrics port.
func checkAPIMetricsPort(t *testing.T, r rendered, cfg map[string]string) {
	t.Helper()
	_, port, err := net.SplitHostPort(cfg["CROPQ_API_METRICS_ADDR"])
	require.NoError(t, err, "the ConfigMap sets CROPQ_API_METRICS_ADDR")
	_, apiPort, err := net.SplitHostPort(cfg["CROPQ_API_ADDR"])
	require.NoError(t, err)
	assert.NotEqual(t, apiPort, port)
	var api *appsv1.Deployment
	for i := range r.deployments {
		if r.deployments[i].Name == "cropq-api" {
			api = &r.deployments[i]
		}
	}
	require.NotNil(t, api)
	assert.Equal(t, port, api.Spec.Template.Annotations["prometheus.io/port"], "scraped on the metrics port")
	var named string
	for _, p := range api.Spec.Template.Spec.Containers[0].Ports {
		if strconv.Itoa(int(p.ContainerPort)) == port {
			named = p.Name
		}
	}
	require.NotEmpty(t, named, "the API container declares its metrics port")
	for _, svc := range r.services {
		for _, p := range svc.Spec.Ports {
			assert.NotEqual(t, named, p.TargetPort.String(), "Service %s exposes the metrics port", svc.Name)
			assert.NotEqual(t, port, p.TargetPort.String(), "Service %s exposes the metrics port", svc.Name)
		}
	}
}

func TestCPUAutoscalerAlternative(t *testing.T) {
	b, err := filesys.MakeFsOnDisk().ReadFile(filepath.Join("k8s", "overlays", "prod", "hpa-cpu.yaml"))
	require.NoError(t, err)
	var hpa autoscalingv2.HorizontalPodAutoscaler
	require.NoError(t, yaml.UnmarshalStrict(b, &hpa))
	assert.Equal(t, "cropq-worker", hpa.Spec.ScaleTargetRef.Name)
}

func TestComposeFile(t *testing.T) {
	names := envNames(t)
	abs, err := filepath.Abs("..")
	require.NoError(t, err)
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  abs,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(abs, "docker-compose.yml")}},
		Environment: map[string]string{},
	}, func(o *loader.Options) { o.SetProjectName("cropq", true); o.Profiles = []string{"*"} })
	require.NoError(t, err)

	svc := map[string]types.ServiceConfig{}
	for name, s := range project.Services {
		svc[name] = s
		if s.Image != "" {
			assert.False(t, strings.HasSuffix(s.Image, ":latest") || !strings.Contains(s.Image, ":"), "%s: image %q is pinned", name, s.Image)
		}
	}
	for _, need := range []string{"redis", "minio", "minio-bucket", "emulator", "api", "worker", "prometheus", "grafana", "jaeger"} {
		require.Contains(t, svc, need)
	}
	assert.Contains(t, strings.Join(svc["redis"].Command, " "), "--appendonly yes")
	assert.NotNil(t, svc["redis"].HealthCheck)
	assert.NotNil(t, svc["minio"].HealthCheck)
	require.NotNil(t, svc["worker"].Deploy)
	assert.Equal(t, 2, *svc["worker"].Deploy.Replicas)
	for _, s := range []string{"api", "worker"} {
		dep := svc[s].DependsOn
		assert.Equal(t, types.ServiceConditionHealthy, dep["redis"].Condition, s)
		assert.Equal(t, types.ServiceConditionCompletedSuccessfully, dep["minio-bucket"].Condition, s)
		for k := range svc[s].Environment {
			assert.True(t, names[k], "%s sets %s, which cropq does not read", s, k)
		}
	}
	assert.Equal(t, []string{"observability"}, svc["prometheus"].Profiles)
	// Both ends of a crop's trace export to the trace viewer.
	for _, s := range []string{"api", "worker"} {
		ep := svc[s].Environment["OTEL_EXPORTER_OTLP_ENDPOINT"]
		require.NotNil(t, ep, "%s exports its spans", s)
		assert.Equal(t, "http://jaeger:4318", *ep, s)
	}

	// Prometheus scrapes the API where /metrics needs no token, a port
	// not published to the host.
	metricsAddr := svc["api"].Environment["CROPQ_API_METRICS_ADDR"]
	require.NotNil(t, metricsAddr, "the api sets CROPQ_API_METRICS_ADDR")
	_, port, err := net.SplitHostPort(*metricsAddr)
	require.NoError(t, err)
	for _, p := range svc["api"].Ports {
		assert.NotEqual(t, port, p.Target, "the metrics port is not published")
		assert.NotEqual(t, port, p.Published, "the metrics port is not published")
	}
	b, err := filesys.MakeFsOnDisk().ReadFile(filepath.Join("prometheus", "prometheus.yml"))
	require.NoError(t, err)
	var prom struct {
		ScrapeConfigs []struct {
			JobName       string `json:"job_name"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(b, &prom))
	var apiTargets []string
	for _, sc := range prom.ScrapeConfigs {
		if sc.JobName == "cropq-api" {
			for _, st := range sc.StaticConfigs {
				apiTargets = append(apiTargets, st.Targets...)
			}
		}
	}
	assert.Equal(t, []string{"api:" + port}, apiTargets)
	grace := svc["worker"].StopGracePeriod
	require.NotNil(t, grace)
	shutdown, err := time.ParseDuration(*svc["worker"].Environment["CROPQ_SHUTDOWN_TIMEOUT"])
	require.NoError(t, err)
	assert.Greater(t, time.Duration(*grace), shutdown)
}

func TestDockerfile(t *testing.T) {
	b, err := filesys.MakeFsOnDisk().ReadFile(filepath.Join("..", "Dockerfile"))
	require.NoError(t, err)
	var froms []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		if f, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("FROM ")); ok {
			froms = append(froms, string(bytes.Fields(f)[0]))
		}
	}
	require.Len(t, froms, 2, "multi-stage")
	assert.Contains(t, froms[1], "distroless/static", "minimal runtime image")
	assert.Contains(t, froms[1], ":nonroot")
	assert.Contains(t, string(b), "CGO_ENABLED=0", "a static binary")
	for _, f := range froms {
		assert.NotContains(t, f, ":latest")
	}
}
