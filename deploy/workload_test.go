package deploy

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/tallyfy-deleter/tallyfy-deleter/worker"
)

const (
	// nonrootUID is the user and group of the image's `USER nonroot:nonroot` in distroless
	// (gcr.io/distroless/static-debian12:nonroot, /etc/passwd: nonroot:x:65532:65532).
	nonrootUID = 65532
	// peakRSS is the most the README's benchmarks saw a worker hold (README, "Performance":
	// 21-35 MiB whatever the backlog; 40 MiB with margin).
	peakRSS = 40 << 20
	// The shutdown's steps past DELETER_SHUTDOWN_TIMEOUT (README, "Shutdown", and worker.Config
	// PullWait and PublishTimeout, whose defaults are not exported): the pull in progress ends
	// within 2s, then each job that could not finish is handed back, its copy confirmed by
	// JetStream within 10s.
	shutdownPullWait     = 2 * time.Second
	shutdownHandBackWait = 10 * time.Second
)

// workloads are the Deployment and the CronJob, as kustomize builds them.
func workloads(t testing.TB) (*appsv1.Deployment, *batchv1.CronJob) {
	t.Helper()
	objs := render(t, baseDir)
	return mustCheck[*appsv1.Deployment](t, one(t, objs, "Deployment", "tallyfy-deleter")),
		mustCheck[*batchv1.CronJob](t, one(t, objs, "CronJob", "tallyfy-deleter-sweep"))
}

// podSpecs are the pod templates of the Deployment (the worker) and the CronJob (the sweep).
func podSpecs(t testing.TB) map[string]*corev1.PodTemplateSpec {
	d, c := workloads(t)
	return map[string]*corev1.PodTemplateSpec{"worker": &d.Spec.Template, "sweep": &c.Spec.JobTemplate.Spec.Template}
}

// onlyContainer is the pod's one container.
func onlyContainer(t testing.TB, pod *corev1.PodSpec) *corev1.Container {
	t.Helper()
	if len(pod.Containers) != 1 || len(pod.InitContainers) > 0 {
		t.Fatalf("want one container, have %d (and %d init containers)", len(pod.Containers), len(pod.InitContainers))
	}
	return &pod.Containers[0]
}

// configMaps are the rendered ConfigMaps' data, by name.
func configMaps(t testing.TB) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	for _, o := range render(t, baseDir) {
		if o.Kind == "ConfigMap" {
			out[o.Name] = mustCheck[*corev1.ConfigMap](t, o).Data
		}
	}
	return out
}

// containerEnv is the environment Kubernetes gives c, with podName as the pod's name: its
// envFrom ConfigMaps' keys, then its env entries (which win). It fails the test on what it
// cannot resolve without a cluster, and on a variable set twice (the later silently wins).
func containerEnv(t testing.TB, c *corev1.Container, podName string) map[string]string {
	t.Helper()
	cms := configMaps(t)
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil || from.Prefix != "" {
			t.Fatalf("container %s: envFrom %+v: only ConfigMaps without a prefix are expected", c.Name, from)
		}
		data, ok := cms[from.ConfigMapRef.Name]
		if !ok {
			t.Fatalf("container %s: envFrom ConfigMap %q is not in the base", c.Name, from.ConfigMapRef.Name)
		}
		for k, v := range data {
			env[k] = v
		}
	}
	for _, e := range c.Env {
		if _, dup := env[e.Name]; dup {
			t.Errorf("container %s: %s is set twice (env and envFrom, or env twice)", c.Name, e.Name)
		}
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
			env[e.Name] = podName
		default:
			t.Fatalf("container %s: %s: valueFrom %+v is not resolved by this test", c.Name, e.Name, e.ValueFrom)
		}
	}
	return env
}

// TestPodsAreRestricted: both pods meet the Pod Security Standards' restricted profile, and
// more: the image's own user and group, a read-only root, no service account token, no service
// links.
func TestPodsAreRestricted(t *testing.T) {
	df := dockerfile(t)
	if !strings.Contains(df, "USER nonroot:nonroot") || !regexp.MustCompile(`(?m)^FROM gcr\.io/distroless/static\S*:nonroot`).MatchString(df) {
		t.Fatalf("the Dockerfile no longer runs distroless's nonroot (%d:%d): update nonrootUID and the manifests", nonrootUID, nonrootUID)
	}
	for name, tmpl := range podSpecs(t) {
		t.Run(name, func(t *testing.T) {
			pod := &tmpl.Spec
			psc := pod.SecurityContext
			if psc == nil {
				t.Fatal("no pod securityContext")
			}
			if pod.HostNetwork || pod.HostPID || pod.HostIPC {
				t.Error("shares a host namespace")
			}
			if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
				t.Error("automountServiceAccountToken is not false: the worker calls no Kubernetes API")
			}
			if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
				t.Error("enableServiceLinks is not false: Services would add NATS_*/TALLYFY_* variables to the settings")
			}
			for _, v := range pod.Volumes {
				if v.Secret == nil && v.ConfigMap == nil && v.EmptyDir == nil && v.Projected == nil && v.DownwardAPI == nil {
					t.Errorf("volume %s: a kind the restricted profile does not allow, or that this pod should not need", v.Name)
				}
			}
			c := onlyContainer(t, pod)
			sc := c.SecurityContext
			if sc == nil {
				t.Fatal("no container securityContext")
			}
			if !isTrue(sc.RunAsNonRoot) && !isTrue(psc.RunAsNonRoot) {
				t.Error("runAsNonRoot is not true")
			}
			if uid := firstInt64(sc.RunAsUser, psc.RunAsUser); uid == nil || *uid != nonrootUID {
				t.Errorf("runAsUser = %v, want the image's user %d", deref(uid), nonrootUID)
			}
			if gid := firstInt64(sc.RunAsGroup, psc.RunAsGroup); gid == nil || *gid != nonrootUID {
				t.Errorf("runAsGroup = %v, want the image's group %d", deref(gid), nonrootUID)
			}
			if isTrue(sc.Privileged) {
				t.Error("privileged")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Error("allowPrivilegeEscalation is not false")
			}
			if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Error("readOnlyRootFilesystem is not true")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				t.Errorf("capabilities %+v: want drop ALL, add none", sc.Capabilities)
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = psc.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("seccompProfile %+v: want RuntimeDefault", seccomp)
			}
		})
	}
}

// TestTokenFileIsReadableByTheImagesUser: TALLYFY_ACCESS_TOKEN_FILE is a key of the mounted
// Secret, readable by uid 65532 and by no one else but root, mounted so that a rotation reaches
// it (no subPath).
func TestTokenFileIsReadableByTheImagesUser(t *testing.T) {
	secret := exampleSecret(t)
	for name, tmpl := range podSpecs(t) {
		t.Run(name, func(t *testing.T) {
			pod := &tmpl.Spec
			c := onlyContainer(t, pod)
			path := containerEnv(t, c, "pod-0")["TALLYFY_ACCESS_TOKEN_FILE"]
			if path == "" {
				t.Fatal("TALLYFY_ACCESS_TOKEN_FILE is not set")
			}
			var mount *corev1.VolumeMount
			for i, m := range c.VolumeMounts {
				if strings.HasPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/") {
					mount = &c.VolumeMounts[i]
				}
			}
			if mount == nil {
				t.Fatalf("no volume is mounted where %s is", path)
			}
			if mount.SubPath != "" || mount.SubPathExpr != "" {
				t.Errorf("mount %s uses a subPath: a rotated Secret would never reach the file", mount.Name)
			}
			if !mount.ReadOnly {
				t.Errorf("mount %s is not readOnly", mount.Name)
			}
			var vol *corev1.Volume
			for i := range pod.Volumes {
				if pod.Volumes[i].Name == mount.Name {
					vol = &pod.Volumes[i]
				}
			}
			if vol == nil || vol.Secret == nil {
				t.Fatalf("volume %s is not a Secret", mount.Name)
			}
			if vol.Secret.SecretName != secret.Name {
				t.Errorf("volume %s mounts Secret %s, the example is %s", vol.Name, vol.Secret.SecretName, secret.Name)
			}
			file := strings.TrimPrefix(path, strings.TrimSuffix(mount.MountPath, "/")+"/")
			mode := int32(0o644) // the API server's default for a secret volume
			if vol.Secret.DefaultMode != nil {
				mode = *vol.Secret.DefaultMode
			}
			key := file
			if len(vol.Secret.Items) > 0 {
				key = ""
				for _, it := range vol.Secret.Items {
					if it.Path == file {
						key = it.Key
						if it.Mode != nil {
							mode = *it.Mode
						}
					}
				}
			}
			if _, ok := secret.StringData[key]; !ok || key == "" {
				t.Errorf("%s is no key of the Secret (its keys: %v)", file, keysOf(secret.StringData))
			}
			// The kubelet writes secret files owned by root:root with the mode asked for; with an
			// fsGroup it then gives them that group and adds group read (its volume ownership
			// change, pkg/volume/volume_linux.go: mode | 0440 on a read-only volume). The
			// container's user has its runAsGroup, fsGroup and supplementalGroups.
			psc := pod.SecurityContext
			uid := *firstInt64(c.SecurityContext.RunAsUser, psc.RunAsUser)
			groups := []int64{*firstInt64(c.SecurityContext.RunAsGroup, psc.RunAsGroup)}
			groups = append(groups, psc.SupplementalGroups...)
			fileGroup := int64(0)
			if psc.FSGroup != nil {
				fileGroup = *psc.FSGroup
				groups = append(groups, fileGroup)
				mode |= 0o440
			}
			readable := uid == 0 && mode&0o400 != 0 || mode&0o004 != 0 || slices.Contains(groups, fileGroup) && mode&0o040 != 0
			if !readable {
				t.Errorf("%s: mode %#o, owner 0, group %d: not readable by uid %d (groups %v)", path, mode, fileGroup, uid, groups)
			}
			if mode&0o007 != 0 {
				t.Errorf("%s: mode %#o: others can read the token", path, mode)
			}
		})
	}
}

// TestProbesUseTheMetricsPort: /healthz for liveness, /readyz for readiness, both on the named
// port that DELETER_HTTP_ADDR serves; the Service and ServiceMonitor scrape that port.
func TestProbesUseTheMetricsPort(t *testing.T) {
	d, _ := workloads(t)
	c := onlyContainer(t, &d.Spec.Template.Spec)
	env := containerEnv(t, c, "pod-0")
	_, portStr, err := net.SplitHostPort(env["DELETER_HTTP_ADDR"])
	if err != nil {
		t.Fatalf("DELETER_HTTP_ADDR %q: %v", env["DELETER_HTTP_ADDR"], err)
	}
	port, _ := strconv.Atoi(portStr)
	var named string
	for _, p := range c.Ports {
		if int(p.ContainerPort) == port {
			named = p.Name
		}
	}
	if named == "" {
		t.Fatalf("no container port is DELETER_HTTP_ADDR's %d", port)
	}
	probes := []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"liveness", c.LivenessProbe, "/healthz"},
		{"readiness", c.ReadinessProbe, "/readyz"},
	}
	for _, p := range probes {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s probe: none, or not HTTP", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe: path %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if p.probe.HTTPGet.Port != intstr.FromString(named) {
			t.Errorf("%s probe: port %s, want the named port %q", p.name, p.probe.HTTPGet.Port.String(), named)
		}
		if p.probe.TimeoutSeconds < 1 || p.probe.PeriodSeconds < 1 || p.probe.FailureThreshold < 1 {
			t.Errorf("%s probe: timeout, period and failure threshold must be set", p.name)
		}
	}
	// A worker that cannot call Tallyfy is unready, not dead: restarting it would help nothing.
	if c.LivenessProbe.PeriodSeconds*c.LivenessProbe.FailureThreshold < 20 {
		t.Errorf("liveness fails after %ds: too eager for a probe that only says the process lives", c.LivenessProbe.PeriodSeconds*c.LivenessProbe.FailureThreshold)
	}
	if c.StartupProbe != nil && c.StartupProbe.HTTPGet != nil && c.StartupProbe.HTTPGet.Path == "/readyz" {
		t.Error("the startup probe waits for readiness: a pod would be killed for a Tallyfy outage at its start")
	}

	objs := render(t, baseDir)
	svc := mustCheck[*corev1.Service](t, one(t, objs, "Service", "tallyfy-deleter"))
	var svcPort string
	for _, p := range svc.Spec.Ports {
		if p.TargetPort == intstr.FromString(named) || p.TargetPort == intstr.FromInt32(int32(port)) {
			svcPort = p.Name
		}
	}
	if svcPort == "" {
		t.Fatalf("Service %s has no port for the container's %s", svc.Name, named)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Error("the Service must publish unready workers: the breaker and credentials alerts need their metrics")
	}
	sm := mustCheck[*monitoringv1.ServiceMonitor](t, one(t, objs, "ServiceMonitor", "tallyfy-deleter"))
	if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != svcPort || sm.Spec.Endpoints[0].Path != "/metrics" {
		t.Errorf("ServiceMonitor endpoints %+v: want port %q, path /metrics", sm.Spec.Endpoints, svcPort)
	}
}

// TestSelectorsPickTheWorkersOnly: the Service, PodDisruptionBudget and ServiceMonitor select the
// Deployment's pods and not the sweep's; the Deployment's selector its own pods.
func TestSelectorsPickTheWorkersOnly(t *testing.T) {
	objs := render(t, baseDir)
	d, cj := workloads(t)
	worker := labels.Set(d.Spec.Template.Labels)
	sweep := labels.Set(cj.Spec.JobTemplate.Spec.Template.Labels)
	svc := mustCheck[*corev1.Service](t, one(t, objs, "Service", "tallyfy-deleter"))
	pdb := mustCheck[*policyv1.PodDisruptionBudget](t, one(t, objs, "PodDisruptionBudget", "tallyfy-deleter"))
	sm := mustCheck[*monitoringv1.ServiceMonitor](t, one(t, objs, "ServiceMonitor", "tallyfy-deleter"))

	selectors := map[string]labels.Selector{"Service": labels.SelectorFromSet(svc.Spec.Selector)}
	for name, ls := range map[string]*metav1.LabelSelector{"Deployment": d.Spec.Selector, "PodDisruptionBudget": pdb.Spec.Selector} {
		sel, err := metav1.LabelSelectorAsSelector(ls)
		if err != nil {
			t.Fatal(err)
		}
		selectors[name] = sel
	}
	for name, sel := range selectors {
		if !sel.Matches(worker) {
			t.Errorf("%s selector %s does not select the worker pods %v", name, sel, worker)
		}
		if sel.Matches(sweep) {
			t.Errorf("%s selector %s selects the sweep's pods %v too", name, sel, sweep)
		}
	}
	smSel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !smSel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %s does not select the Service (labels %v)", smSel, svc.Labels)
	}
	if pdb.Spec.UnhealthyPodEvictionPolicy == nil || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow {
		t.Error("PodDisruptionBudget: unhealthyPodEvictionPolicy must be AlwaysAllow, or a Tallyfy outage (every worker unready) blocks node drains")
	}
	if pdb.Spec.MaxUnavailable == nil && pdb.Spec.MinAvailable == nil {
		t.Error("PodDisruptionBudget sets no budget")
	}
}

// TestDeploymentSettings: what the task and the README ask of the worker's pods.
func TestDeploymentSettings(t *testing.T) {
	d, _ := workloads(t)
	if d.Spec.Replicas != nil {
		t.Errorf("replicas %d: the ScaledObject owns them; every kubectl apply would reset KEDA's count", *d.Spec.Replicas)
	}
	pod := &d.Spec.Template.Spec
	c := onlyContainer(t, pod)
	env := containerEnv(t, c, "tallyfy-deleter-7d9f-abc")
	for k, want := range map[string]string{
		"DELETER_PROVISION": "false",                    // NACK manages the streams
		"LOG_FORMAT":        "json",                     // for the log pipeline
		"DELETER_WORKER_ID": "tallyfy-deleter-7d9f-abc", // the pod's name, from the downward API
	} {
		if env[k] != want {
			t.Errorf("%s = %q, want %q", k, env[k], want)
		}
	}
	u, err := url.Parse(env["NATS_URL"])
	if err != nil || u.Scheme != "nats" || strings.Split(u.Hostname(), ".")[0] != "nats" {
		t.Errorf("NATS_URL %q: want nats://nats[.<namespace>...]:<port>, the chart's nats Service", env["NATS_URL"])
	}
	for _, k := range []string{"TALLYFY_ORG_ID", "TALLYFY_ALLOWED_ORGS"} {
		if env[k] == "" {
			t.Errorf("%s is not set (a placeholder to replace)", k)
		}
	}
	if _, ok := env["TALLYFY_ACCESS_TOKEN"]; ok {
		t.Error("TALLYFY_ACCESS_TOKEN: the token comes from the Secret's file, never a variable")
	}

	grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	shutdown := worker.DefaultShutdownTimeout
	if v, ok := env["DELETER_SHUTDOWN_TIMEOUT"]; ok {
		if shutdown, err = time.ParseDuration(v); err != nil {
			t.Fatalf("DELETER_SHUTDOWN_TIMEOUT %q: %v", v, err)
		}
	}
	if need := shutdown + shutdownPullWait + shutdownHandBackWait; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %s: SIGKILL could come before the worker has handed back its jobs (DELETER_SHUTDOWN_TIMEOUT %s + %s pull + %s hand-back = %s)",
			grace, shutdown, shutdownPullWait, shutdownHandBackWait, need)
	}

	var spread bool
	for _, tsc := range pod.TopologySpreadConstraints {
		sel, err := metav1.LabelSelectorAsSelector(tsc.LabelSelector)
		if err != nil {
			t.Fatal(err)
		}
		if tsc.TopologyKey == corev1.LabelHostname && tsc.MaxSkew == 1 && tsc.WhenUnsatisfiable == corev1.DoNotSchedule && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
			spread = true
		}
	}
	if a := pod.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			spread = spread || term.TopologyKey == corev1.LabelHostname
		}
	}
	if !spread {
		t.Error("nothing keeps two replicas off one node: want a topology spread (maxSkew 1, DoNotSchedule) on kubernetes.io/hostname")
	}

	req, lim := c.Resources.Requests.Memory(), c.Resources.Limits.Memory()
	if req.Cmp(*resource.NewQuantity(peakRSS, resource.BinarySI)) < 0 {
		t.Errorf("memory request %s: below the worker's peak RSS, 40Mi", req)
	}
	if lim.IsZero() || lim.Cmp(*resource.NewQuantity(2*peakRSS, resource.BinarySI)) < 0 || lim.Cmp(resource.MustParse("512Mi")) > 0 {
		t.Errorf("memory limit %s: want room for twice the peak RSS (80Mi), and not so much that a leak goes unnoticed (512Mi)", lim)
	}
	if c.Resources.Requests.Cpu().IsZero() {
		t.Error("no CPU request")
	}
	if !strings.HasPrefix(c.Image, imageName(t)+":") && !strings.HasPrefix(c.Image, imageName(t)+"@") {
		t.Errorf("image %s: not the kustomization's image %s", c.Image, imageName(t))
	}
}

// imageName is the image kustomization.yaml's images: sets the tag of.
func imageName(t testing.TB) string {
	t.Helper()
	k := kustomization(t, baseDir)
	if len(k.Images) != 1 {
		t.Fatalf("kustomization.yaml: want one images: entry, have %d", len(k.Images))
	}
	return k.Images[0].Name
}

// TestEnvVarsAreSettings: every variable a pod sets is a setting its subcommand lists in
// --help; a typo or a setting that does not exist (yet) would be ignored in silence.
func TestEnvVarsAreSettings(t *testing.T) {
	entry := entrypoint(t)
	for name, tmpl := range podSpecs(t) {
		t.Run(name, func(t *testing.T) {
			c := onlyContainer(t, &tmpl.Spec)
			args := append(append([]string{}, c.Command...), c.Args...)
			if len(c.Command) == 0 {
				args = append(append([]string{}, entry...), c.Args...)
			}
			if len(args) < 2 || args[0] != entry[0] {
				t.Fatalf("runs %v: not the image's binary %s", args, entry[0])
			}
			sub := args[1]
			h := help(t, sub)
			for k := range containerEnv(t, c, "pod-0") {
				if !h.env[k] {
					t.Errorf("%s is not a setting of `tallyfy-deleter %s` (see its --help)", k, sub)
				}
			}
			for _, a := range args[2:] {
				if flag, _, _ := strings.Cut(a, "="); strings.HasPrefix(flag, "--") && !h.flags[flag] {
					t.Errorf("%s is not a flag of `tallyfy-deleter %s`", flag, sub)
				}
			}
		})
	}
}

// TestCronJobSweeps: the CronJob runs the image's binary as `sweep` (replacing the entrypoint,
// which runs the worker), with a cutoff, one at a time.
func TestCronJobSweeps(t *testing.T) {
	_, cj := workloads(t)
	c := onlyContainer(t, &cj.Spec.JobTemplate.Spec.Template.Spec)
	entry := entrypoint(t)
	if len(c.Command) != 1 || c.Command[0] != entry[0] {
		t.Errorf("command %v: want [%s], replacing the image's entrypoint %v (which would run the worker)", c.Command, entry[0], entry)
	}
	if len(c.Args) == 0 || c.Args[0] != "sweep" {
		t.Fatalf("args %v: want sweep ...", c.Args)
	}
	if !slices.Contains(c.Args, "--archived-for") && !slices.Contains(c.Args, "--archived-before") {
		t.Errorf("args %v: a sweep needs --archived-for or --archived-before", c.Args)
	}
	if slices.Contains(c.Args, "--dry-run") {
		t.Errorf("args %v: a dry run enqueues nothing", c.Args)
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("concurrencyPolicy %s, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	if cj.Spec.TimeZone == nil {
		t.Error("no timeZone: the schedule would follow the controller's clock")
	}
	if rp := cj.Spec.JobTemplate.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyNever && rp != corev1.RestartPolicyOnFailure {
		t.Errorf("restartPolicy %s", rp)
	}
	if cj.Spec.JobTemplate.Spec.ActiveDeadlineSeconds == nil {
		t.Error("no activeDeadlineSeconds: a sweep that hangs would block every later one (Forbid)")
	}
}

// TestPlaceholdersRefuseToStart: the base as shipped, org IDs not yet replaced, starts neither the
// worker nor the sweep: nothing is deleted for an organization no one chose.
func TestPlaceholdersRefuseToStart(t *testing.T) {
	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tmpl := range podSpecs(t) {
		t.Run(name, func(t *testing.T) {
			c := onlyContainer(t, &tmpl.Spec)
			env := containerEnv(t, c, "pod-0")
			env["TALLYFY_ACCESS_TOKEN_FILE"] = token
			env["NATS_URL"] = "nats://127.0.0.1:1" // never reached
			args := c.Args
			if len(args) == 0 {
				args = entrypoint(t)[1:]
			}
			_, stderr, code := runBinary(t, env, args...)
			if code != 2 || !strings.Contains(stderr, "TALLYFY_ORG_ID") {
				t.Errorf("exit status %d, want 2 naming TALLYFY_ORG_ID; stderr:\n%s", code, stderr)
			}
		})
	}
}

// dockerfile is ../Dockerfile.
func dockerfile(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// entrypoint is the image's ENTRYPOINT.
func entrypoint(t testing.TB) []string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^ENTRYPOINT\s+(\[.*\])\s*$`).FindStringSubmatch(dockerfile(t))
	if m == nil {
		t.Fatal("the Dockerfile has no ENTRYPOINT [...]")
	}
	var e []string
	if err := json.Unmarshal([]byte(m[1]), &e); err != nil || len(e) == 0 {
		t.Fatalf("ENTRYPOINT %s: %v", m[1], err)
	}
	return e
}

func isTrue(b *bool) bool { return b != nil && *b }

func firstInt64(vs ...*int64) *int64 {
	for _, v := range vs {
		if v != nil {
			return v
		}
	}
	return nil
}

func deref(p *int64) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
