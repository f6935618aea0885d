{{/*
Names, labels and selectors live here once; every template uses them.
Engine helpers take a dict: (dict "root" $ "spec" $spec "index" $i).
*/}}

{{/* Object name prefix: the release name (so release `vllm` gives vllm-router-service). */}}
{{- define "pdstack.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pdstack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of pod templates: only what stays the same across chart versions, so an upgrade that
changes nothing in a pod (a router-only change, a chart version bump) restarts no engine.
*/}}
{{- define "pdstack.podLabels" -}}
app.kubernetes.io/name: pdstack
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pdstack
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Labels every object carries (pod templates use pdstack.podLabels: no chart or app version). */}}
{{- define "pdstack.labels" -}}
helm.sh/chart: {{ include "pdstack.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{ include "pdstack.podLabels" . }}
{{- end -}}

{{/* Selector labels of one component (router | engine | cache-server); arg: (dict "root" $ "component" "router"). */}}
{{- define "pdstack.selectorLabels" -}}
app.kubernetes.io/name: pdstack
app.kubernetes.io/instance: {{ .root.Release.Name }}
pdstack.io/component: {{ .component }}
{{- end -}}

{{/* ---------- router ---------- */}}

{{- define "pdstack.router.name" -}}
{{- printf "%s-router" (include "pdstack.fullname" .) -}}
{{- end -}}

{{- define "pdstack.router.serviceName" -}}
{{- printf "%s-router-service" (include "pdstack.fullname" .) -}}
{{- end -}}

{{- define "pdstack.router.serviceAccountName" -}}
{{- default (include "pdstack.router.name" .) .Values.routerSpec.serviceAccountName -}}
{{- end -}}

{{/*
The router image. Until pdstack publishes it, the user names it: the render fails, saying how
to build and push one, when routerSpec.repository is empty or names production-stack's router
(which has no `pdstack-router` command). Release builds of the chart set the published image.
*/}}
{{- define "pdstack.router.image" -}}
{{- $rs := .Values.routerSpec -}}
{{- $tag := toString (default .Chart.AppVersion $rs.tag) -}}
{{- if not $rs.repository -}}
{{- fail (printf "routerSpec.repository is required: the pdstack router image is not published yet. Build it with `make image` (it makes localhost/pdstack-router:%s and .cache/images/pdstack-router-%s.tar), then load that archive into kind or minikube and set routerSpec.repository=localhost/pdstack-router, or push it to a registry your nodes pull from with `make image PUSH_TO=<registry>/pdstack-router` and set routerSpec.repository=<registry>/pdstack-router" .Chart.AppVersion .Chart.AppVersion) -}}
{{- end -}}
{{- if regexMatch `(^|/)(lmstack-router|vllm_router|vllm-router|git-act-router)$|(^|/)production-stack/router$` $rs.repository -}}
{{- fail (printf "routerSpec.repository: %s is production-stack's router image; the chart starts `pdstack-router`, which that image does not contain, so the pod would crash at start. Build pdstack's router with `make image` (localhost/pdstack-router:%s; `make image PUSH_TO=<registry>/pdstack-router` pushes it) and set routerSpec.repository to it, with routerSpec.tag empty" $rs.repository .Chart.AppVersion) -}}
{{- end -}}
{{- printf "%s:%s" $rs.repository $tag -}}
{{- end -}}

{{/* The label selector the router discovers engines with: this release's engines only. */}}
{{- define "pdstack.router.labelSelector" -}}
{{- printf "app.kubernetes.io/instance=%s,pdstack.io/component=engine" .Release.Name -}}
{{- end -}}

{{/* Routing logic with production-stack's names (disaggregated_prefill, prefixaware) folded into the router's. */}}
{{- define "pdstack.router.routingLogic" -}}
{{- $logic := .Values.routerSpec.routingLogic -}}
{{- get (dict "disaggregated_prefill" "disagg_prefill" "prefixaware" "prefix_aware") $logic | default $logic -}}
{{- end -}}

{{- define "pdstack.router.isDisagg" -}}
{{- if eq (include "pdstack.router.routingLogic" .) "disagg_prefill" }}true{{ end -}}
{{- end -}}

{{/*
KV transport the router speaks: routerSpec.pd.kvTransport, else the one the enabled prefill/decode
specs imply (validate.yaml fails the render when they disagree). Empty when there is no PD.
*/}}
{{- define "pdstack.router.kvTransport" -}}
{{- if .Values.routerSpec.pd.kvTransport -}}
{{- .Values.routerSpec.pd.kvTransport -}}
{{- else -}}
{{- $found := "" -}}
{{- range $i, $spec := (include "pdstack.engine.enabledSpecs" . | fromYamlArray) -}}
{{- if and (not $found) (ne $spec.role "both") -}}
{{- $found = include "pdstack.engine.transport" (dict "root" $ "spec" $spec) -}}
{{- end -}}
{{- end -}}
{{- $found -}}
{{- end -}}
{{- end -}}

{{- define "pdstack.router.usesLmcacheProxy" -}}
{{- if and (include "pdstack.router.isDisagg" .) (eq (include "pdstack.router.kvTransport" .) "lmcache") }}true{{ end -}}
{{- end -}}

{{/* ---------- engines ---------- */}}

{{/*
Enabled model specs as a YAML list (engines disabled => empty). Each copy carries `_index` (its
position in modelSpec, for messages) and a `role`: specs without one are aggregated (`both`), as
in production-stack; _validate.tpl refuses a missing role where the spec moves KV.
*/}}
{{- define "pdstack.engine.enabledSpecs" -}}
{{- $out := list -}}
{{- if .Values.servingEngineSpec.enableEngine -}}
{{- range $i, $spec := .Values.servingEngineSpec.modelSpec -}}
{{- if ne (toString $spec.enabled) "false" -}}
{{- $copy := deepCopy $spec -}}
{{- $_ := set $copy "_index" $i -}}
{{- if not $spec.role -}}
{{- $_ := set $copy "role" "both" -}}
{{- $_ := set $copy "_roleDefaulted" true -}}
{{- end -}}
{{- $out = append $out $copy -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{- define "pdstack.engine.name" -}}
{{- printf "%s-%s-engine" (include "pdstack.fullname" .root) .spec.name -}}
{{- end -}}

{{- define "pdstack.engine.serviceName" -}}
{{- printf "%s-%s-engine-service" (include "pdstack.fullname" .root) .spec.name -}}
{{- end -}}

{{- define "pdstack.engine.configMapName" -}}
{{- printf "%s-%s-lmcache" (include "pdstack.fullname" .root) .spec.name -}}
{{- end -}}

{{- define "pdstack.engine.chatTemplateConfigMapName" -}}
{{- printf "%s-%s-chat-template" (include "pdstack.fullname" .root) .spec.name -}}
{{- end -}}

{{- define "pdstack.engine.pvcName" -}}
{{- default (printf "%s-%s-storage-claim" (include "pdstack.fullname" .root) .spec.name) .spec.pvcExistingClaimName -}}
{{- end -}}

{{- define "pdstack.engine.selectorLabels" -}}
{{ include "pdstack.selectorLabels" (dict "root" .root "component" "engine") }}
pdstack.io/model-spec: {{ .spec.name }}
{{- end -}}

{{/* Pod labels the router discovers engines by (see the router contract). */}}
{{- define "pdstack.engine.podLabels" -}}
{{ include "pdstack.podLabels" .root }}
pdstack.io/component: engine
pdstack.io/role: {{ .spec.role }}
pdstack.io/model-spec: {{ .spec.name }}
{{- end -}}

{{/* Labels of an engine spec's objects (Deployment, Service, HPA, ...). */}}
{{- define "pdstack.engine.labels" -}}
{{ include "pdstack.labels" .root }}
pdstack.io/component: engine
pdstack.io/role: {{ .spec.role }}
pdstack.io/model-spec: {{ .spec.name }}
{{- end -}}

{{/* The model name clients send (label values cannot hold "/", so it goes in an annotation). */}}
{{- define "pdstack.engine.servedModelName" -}}
{{- default .spec.modelURL .spec.servedModelName -}}
{{- end -}}

{{- define "pdstack.engine.image" -}}
{{- $img := include "pdstack.engine.imageParts" . | fromYaml -}}
{{- printf "%s:%s" $img.repository $img.tag -}}
{{- end -}}

{{/* The engine image as {repository, tag, at}: `at` is the value that sets the tag (for messages). */}}
{{- define "pdstack.engine.imageParts" -}}
{{- $img := .root.Values.servingEngineSpec.image -}}
{{- $at := ternary (printf "servingEngineSpec.modelSpec[%v].tag" .spec._index) "servingEngineSpec.image.tag" (hasKey .spec "tag") -}}
{{- toYaml (dict "repository" (default $img.repository .spec.repository) "tag" (toString (default $img.tag .spec.tag)) "at" $at) -}}
{{- end -}}

{{/* The command that starts vLLM: the spec's, else servingEngineSpec.command. */}}
{{- define "pdstack.engine.command" -}}
{{- toYaml (default .root.Values.servingEngineSpec.command .spec.command) -}}
{{- end -}}

{{- define "pdstack.engine.pythonHashSeed" -}}
{{- toString (default .root.Values.servingEngineSpec.pythonHashSeed .spec.pythonHashSeed) -}}
{{- end -}}

{{/* A number as vLLM expects it on the command line: integers without exponent. */}}
{{- define "pdstack.num" -}}
{{- if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- printf "%d" (int64 .) -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "pdstack.engine.tensorParallelSize" -}}
{{- $v := .spec.vllmConfig | default dict -}}
{{- int64 (default 1 $v.tensorParallelSize) -}}
{{- end -}}

{{- define "pdstack.engine.dataParallelSize" -}}
{{- $v := .spec.vllmConfig | default dict -}}
{{- int64 (default 1 $v.dataParallelSize) -}}
{{- end -}}

{{/* GPUs (ranks) one pod needs: tensor x pipeline x data parallel size (all DP ranks run in the pod). */}}
{{- define "pdstack.engine.ranks" -}}
{{- $v := .spec.vllmConfig | default dict -}}
{{- mul (int64 (default 1 $v.tensorParallelSize)) (int64 (default 1 $v.pipelineParallelSize)) (int64 (default 1 $v.dataParallelSize)) -}}
{{- end -}}

{{/*
Size of the memory-backed /dev/shm: the spec's shmSize, else servingEngineSpec.shmSize; "auto"
is 2Gi per rank (NCCL and vLLM's worker queues use it), at most 16Gi; "0" means no volume.
*/}}
{{- define "pdstack.engine.shmSize" -}}
{{- $size := toString (default .root.Values.servingEngineSpec.shmSize .spec.shmSize) -}}
{{- if eq $size "auto" -}}
{{- printf "%dGi" (min 16 (mul 2 (int64 (include "pdstack.engine.ranks" .)))) -}}
{{- else if ne $size "0" -}}
{{- $size -}}
{{- end -}}
{{- end -}}

{{/* Default kv_role from the spec role. */}}
{{- define "pdstack.engine.kvRole" -}}
{{- $kt := .spec.kvTransfer | default dict -}}
{{- if $kt.role -}}{{ $kt.role }}
{{- else if eq .spec.role "prefill" -}}kv_producer
{{- else if eq .spec.role "decode" -}}kv_consumer
{{- else -}}kv_both
{{- end -}}
{{- end -}}

{{- define "pdstack.engine.lmcacheEnabled" -}}
{{- $lc := .spec.lmcacheConfig | default dict -}}
{{- if $lc.enabled }}true{{ end -}}
{{- end -}}

{{- define "pdstack.engine.lmcachePD" -}}
{{- $lc := .spec.lmcacheConfig | default dict -}}
{{- if and $lc.enabled $lc.enablePD }}true{{ end -}}
{{- end -}}

{{/* Connector: kvTransfer.connector, else LMCacheConnectorV1 when lmcacheConfig is enabled. */}}
{{- define "pdstack.engine.connector" -}}
{{- $kt := .spec.kvTransfer | default dict -}}
{{- if $kt.connector -}}{{ $kt.connector }}
{{- else if include "pdstack.engine.lmcacheEnabled" . -}}LMCacheConnectorV1
{{- end -}}
{{- end -}}

{{/* Connector names a spec uses, MultiConnector's children included. */}}
{{- define "pdstack.engine.connectorSet" -}}
{{- $c := include "pdstack.engine.connector" . -}}
{{- $names := list $c -}}
{{- if eq $c "MultiConnector" -}}
{{- $extra := (.spec.kvTransfer | default dict).extraConfig | default dict -}}
{{- range ($extra.connectors | default list) -}}
{{- $names = append $names (toString .kv_connector) -}}
{{- end -}}
{{- end -}}
{{- join "," $names -}}
{{- end -}}

{{/* KV transport a spec implies for the router: nixl | lmcache | fixed | none. */}}
{{- define "pdstack.engine.transport" -}}
{{- $set := splitList "," (include "pdstack.engine.connectorSet" .) -}}
{{- if and (has "LMCacheConnectorV1" $set) (include "pdstack.engine.lmcachePD" .) -}}lmcache
{{- else if has "NixlConnector" $set -}}nixl
{{- else if has "LMCacheConnectorV1" $set -}}fixed
{{- else -}}none
{{- end -}}
{{- end -}}

{{- define "pdstack.engine.usesNixl" -}}
{{- if has "NixlConnector" (splitList "," (include "pdstack.engine.connectorSet" .)) }}true{{ end -}}
{{- end -}}

{{/* vLLM's --kv-transfer-config as a JSON string; empty when the spec has no connector. */}}
{{- define "pdstack.engine.kvTransferConfig" -}}
{{- $connector := include "pdstack.engine.connector" . -}}
{{- if $connector -}}
{{- $kt := .spec.kvTransfer | default dict -}}
{{- $cfg := dict "kv_connector" $connector "kv_role" (include "pdstack.engine.kvRole" .) -}}
{{- $_ := set $cfg "kv_load_failure_policy" (default "fail" $kt.loadFailurePolicy) -}}
{{- with $kt.bufferDevice }}{{ $_ := set $cfg "kv_buffer_device" . }}{{ end -}}
{{- if hasKey $kt "bufferSize" }}{{ $_ := set $cfg "kv_buffer_size" $kt.bufferSize }}{{ end -}}
{{- with $kt.ip }}{{ $_ := set $cfg "kv_ip" . }}{{ end -}}
{{- if hasKey $kt "port" }}{{ $_ := set $cfg "kv_port" $kt.port }}{{ end -}}
{{- if hasKey $kt "rank" }}{{ $_ := set $cfg "kv_rank" $kt.rank }}{{ end -}}
{{- if hasKey $kt "parallelSize" }}{{ $_ := set $cfg "kv_parallel_size" $kt.parallelSize }}{{ end -}}
{{- $extra := deepCopy ($kt.extraConfig | default dict) -}}
{{- if and (eq $connector "LMCacheConnectorV1") (include "pdstack.engine.lmcachePD" .) -}}
{{- /* LMCache PD: keep partial chunks and give each spec its own RPC socket name (seed 001). */ -}}
{{- $extra = merge $extra (dict "discard_partial_chunks" false "lmcache_rpc_port" .spec.name) -}}
{{- /* The decoder is sent the prompt plus the prefiller's first token: its LMCache lookup must
  leave that token out, or the prompt's last (partial) chunk never matches and is recomputed. */ -}}
{{- if eq (include "pdstack.engine.kvRole" .) "kv_consumer" -}}
{{- $extra = merge $extra (dict "skip_last_n_tokens" 1) -}}
{{- end -}}
{{- end -}}
{{- if $extra }}{{ $_ := set $cfg "kv_connector_extra_config" $extra }}{{ end -}}
{{- toJson $cfg -}}
{{- end -}}
{{- end -}}

{{/* LMCache receiver ports, one per TP rank: a list of ints as YAML. */}}
{{- define "pdstack.engine.lmcachePorts" -}}
{{- $tp := int (include "pdstack.engine.tensorParallelSize" .) -}}
{{- $ports := list -}}
{{- if kindIs "slice" .value -}}
{{- range .value }}{{ $ports = append $ports (int64 .) }}{{ end -}}
{{- else -}}
{{- range $r := until $tp }}{{ $ports = append $ports (add (int64 $.value) $r) }}{{ end -}}
{{- end -}}
{{- toYaml $ports -}}
{{- end -}}

{{- define "pdstack.engine.lmcacheInitPorts" -}}
{{- $lc := .spec.lmcacheConfig | default dict -}}
{{- include "pdstack.engine.lmcachePorts" (dict "root" .root "spec" .spec "value" (default 7300 $lc.pdPeerInitPort)) -}}
{{- end -}}

{{- define "pdstack.engine.lmcacheAllocPorts" -}}
{{- $lc := .spec.lmcacheConfig | default dict -}}
{{- include "pdstack.engine.lmcachePorts" (dict "root" .root "spec" .spec "value" (default 7400 $lc.pdPeerAllocPort)) -}}
{{- end -}}

{{/* True for LMCache PD receivers (decoders): they publish init/alloc ports to the router. */}}
{{- define "pdstack.engine.lmcacheReceiver" -}}
{{- if include "pdstack.engine.lmcachePD" . -}}
{{- $lc := .spec.lmcacheConfig -}}
{{- if eq (default (ternary "sender" "receiver" (eq .spec.role "prefill")) $lc.pdRole) "receiver" }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* Remote LMCache backend URL: lmcacheConfig.remoteUrl, else the chart's cache server when enabled. */}}
{{- define "pdstack.engine.lmcacheRemoteUrl" -}}
{{- $lc := .spec.lmcacheConfig | default dict -}}
{{- $cs := .root.Values.cacheserverSpec -}}
{{- if $lc.remoteUrl -}}{{ $lc.remoteUrl }}
{{- else if and $cs.enabled (ne (toString $lc.useCacheServer) "false") -}}
{{- printf "lm://%s:%d" (include "pdstack.cacheserver.serviceName" .root) (int64 $cs.servicePort) -}}
{{- end -}}
{{- end -}}

{{/*
The LMCache config file of one spec, as YAML. "@POD_IP@" is replaced with the pod IP by the
engine's init container (LMCache reads pd_peer_host from the file, and the IP is only known
at run time).
*/}}
{{- define "pdstack.engine.lmcacheConfig" -}}
{{- $lc := .spec.lmcacheConfig -}}
{{- $root := .root -}}
{{- $pd := include "pdstack.engine.lmcachePD" . -}}
{{- $cfg := dict -}}
{{- with $lc.chunkSize }}{{ $_ := set $cfg "chunk_size" . }}{{ end -}}
{{- $_ := set $cfg "local_cpu" (ternary $lc.localCpu (not $pd) (hasKey $lc "localCpu")) -}}
{{- if hasKey $lc "maxLocalCpuSize" }}{{ $_ := set $cfg "max_local_cpu_size" $lc.maxLocalCpuSize }}{{ end -}}
{{- /* production-stack's cpuOffloadingBufferSize (GB): CPU offload on when above zero. */ -}}
{{- if and (hasKey $lc "cpuOffloadingBufferSize") (not (hasKey $lc "maxLocalCpuSize")) -}}
{{- $_ := set $cfg "local_cpu" (gt (float64 $lc.cpuOffloadingBufferSize) 0.0) -}}
{{- $_ := set $cfg "max_local_cpu_size" $lc.cpuOffloadingBufferSize -}}
{{- end -}}
{{- with $lc.localDisk }}{{ $_ := set $cfg "local_disk" . }}{{ end -}}
{{- if hasKey $lc "maxLocalDiskSize" }}{{ $_ := set $cfg "max_local_disk_size" $lc.maxLocalDiskSize }}{{ end -}}
{{- if $pd -}}
{{- $_ := set $cfg "enable_pd" true -}}
{{- $_ := set $cfg "transfer_channel" (default "nixl" $lc.transferChannel) -}}
{{- $_ := set $cfg "pd_buffer_size" (default 1073741824 $lc.pdBufferSize) -}}
{{- $_ := set $cfg "pd_buffer_device" (default "cuda" $lc.pdBufferDevice) -}}
{{- with $lc.nixlBackends }}{{ $_ := set $cfg "nixl_backends" . }}{{ end -}}
{{- if include "pdstack.engine.lmcacheReceiver" . -}}
{{- $_ := set $cfg "pd_role" "receiver" -}}
{{- $_ := set $cfg "pd_peer_host" (default "@POD_IP@" $lc.pdPeerHost) -}}
{{- $init := include "pdstack.engine.lmcacheInitPorts" . | fromYamlArray -}}
{{- $alloc := include "pdstack.engine.lmcacheAllocPorts" . | fromYamlArray -}}
{{- $_ := set $cfg "pd_peer_init_port" (ternary (first $init) $init (eq (len $init) 1)) -}}
{{- $_ := set $cfg "pd_peer_alloc_port" (ternary (first $alloc) $alloc (eq (len $alloc) 1)) -}}
{{- else -}}
{{- $_ := set $cfg "pd_role" "sender" -}}
{{- $_ := set $cfg "pd_proxy_host" (default (include "pdstack.router.serviceName" $root) $lc.pdProxyHost) -}}
{{- $_ := set $cfg "pd_proxy_port" (default $root.Values.routerSpec.pd.proxyPort $lc.pdProxyPort) -}}
{{- end -}}
{{- end -}}
{{- with include "pdstack.engine.lmcacheRemoteUrl" . -}}
{{- $_ := set $cfg "remote_url" . -}}
{{- $_ := set $cfg "remote_serde" (default $root.Values.cacheserverSpec.serde $lc.remoteSerde) -}}
{{- end -}}
{{- with $lc.extraConfig }}{{ $_ := set $cfg "extra_config" . }}{{ end -}}
{{- $cfg = merge (deepCopy ($lc.additionalConfig | default dict)) $cfg -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* Secret key names for string tokens. */}}
{{- define "pdstack.secretName" -}}
{{- printf "%s-secrets" (include "pdstack.fullname" .) -}}
{{- end -}}

{{/*
EnvVar for a value that is either a string (stored in the chart's Secret under `key`) or
{secretName, secretKey}; arg: (dict "root" $ "name" ENV "value" v "key" secretKey).
*/}}
{{- define "pdstack.secretEnv" -}}
{{- if kindIs "map" .value -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .value.secretName }}
      key: {{ .value.secretKey }}
{{- else if .value -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "pdstack.secretName" .root }}
      key: {{ .key }}
{{- end -}}
{{- end -}}

{{/* ---------- cache server ---------- */}}

{{- define "pdstack.cacheserver.name" -}}
{{- printf "%s-cache-server" (include "pdstack.fullname" .) -}}
{{- end -}}

{{- define "pdstack.cacheserver.serviceName" -}}
{{- printf "%s-cache-server-service" (include "pdstack.fullname" .) -}}
{{- end -}}

{{/* ServiceMonitor gate: the CRD exists, or the value forces it. */}}
{{- define "pdstack.serviceMonitor.enabled" -}}
{{- $sm := .sm -}}
{{- if and $sm.enabled (or $sm.force (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) }}true{{ end -}}
{{- end -}}

{{/*
Engine resources: resources.{cpu,memory,gpu,gpuType,limits} (production-stack's requestCPU,
requestMemory, requestGPU, requestGPUType, limitCPU, limitMemory are accepted as aliases).
GPUs are requested and limited alike, so the scheduler places them.
*/}}
{{- define "pdstack.engine.resources" -}}
{{- $s := .spec -}}
{{- $r := $s.resources | default dict -}}
{{- $lim := $r.limits | default dict -}}
{{- $cpu := default $s.requestCPU $r.cpu -}}
{{- $mem := default $s.requestMemory $r.memory -}}
{{- $gpu := int64 (default 0 (default $s.requestGPU $r.gpu)) -}}
{{- $gpuType := default "nvidia.com/gpu" (default $s.requestGPUType $r.gpuType) -}}
{{- $limCpu := default $s.limitCPU $lim.cpu -}}
{{- $limMem := default $s.limitMemory $lim.memory -}}
{{- $req := dict -}}
{{- with $cpu }}{{ $_ := set $req "cpu" (include "pdstack.num" .) }}{{ end -}}
{{- with $mem }}{{ $_ := set $req "memory" (include "pdstack.num" .) }}{{ end -}}
{{- with $r.ephemeralStorage }}{{ $_ := set $req "ephemeral-storage" (include "pdstack.num" .) }}{{ end -}}
{{- $limits := dict -}}
{{- with $limCpu }}{{ $_ := set $limits "cpu" (include "pdstack.num" .) }}{{ end -}}
{{- with $limMem }}{{ $_ := set $limits "memory" (include "pdstack.num" .) }}{{ end -}}
{{- if gt $gpu 0 -}}
{{- $_ := set $req $gpuType (toString $gpu) -}}
{{- $_ := set $limits $gpuType (toString $gpu) -}}
{{- end -}}
{{- /* Extended resources (RDMA NICs, EFA, hostdev): requested and limited alike, as Kubernetes requires. */ -}}
{{- range $name, $count := ($r.extended | default dict) -}}
{{- $_ := set $req $name (include "pdstack.num" $count) -}}
{{- $_ := set $limits $name (include "pdstack.num" $count) -}}
{{- end -}}
{{- $out := dict -}}
{{- with $req }}{{ $_ := set $out "requests" . }}{{ end -}}
{{- with $limits }}{{ $_ := set $out "limits" . }}{{ end -}}
{{- with $s.resourceClaims -}}
{{- $claims := list -}}
{{- range . }}{{ $claims = append $claims (dict "name" .name) }}{{ end -}}
{{- $_ := set $out "claims" $claims -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
The engine's preStop script (POSIX sh, python3 from the image): wait `delay` seconds, then while
vLLM reports running or waiting requests, then `delay` seconds more. A failed scrape ends the
wait. arg: (dict "port" containerPort "delay" seconds).
*/}}
{{- define "pdstack.engine.drainScript" -}}
{{- $busy := printf `import sys, urllib.request as u; t = u.urlopen("http://127.0.0.1:%d/metrics", timeout=5).read().decode(); sys.exit(0 if any(l.split("{")[0] in ("vllm:num_requests_running", "vllm:num_requests_waiting") and float(l.split()[-1]) > 0 for l in t.splitlines()) else 1)` (int .port) -}}
{{- printf "sleep %d; while python3 -c '%s' 2>/dev/null; do sleep 2; done; sleep %d" .delay $busy .delay -}}
{{- end -}}

{{/*
LMCache 0.5.6 config keys (lmcache/v1/config.py: definitions and accepted aliases). LMCache
logs and ignores any other key, so _validate.tpl refuses unknown keys in
lmcacheConfig.additionalConfig and in LMCacheConnectorV1's `lmcache.<key>` extra config.
*/}}
{{- define "pdstack.lmcache.knownKeys" -}}
app_id audit_actual_remote_url blend_check_layers blend_min_tokens blend_recompute_ratios
blend_special_str blend_thresholds blocking_timeout_secs cache_policy chunk_size
chunk_statistics_auto_exit_target_unique_chunks chunk_statistics_auto_exit_timeout_hours
chunk_statistics_auto_start_statistics chunk_statistics_strategy controller_pull_url
controller_reply_url enable_async_loading enable_blending enable_chunk_statistics
enable_controller enable_hidden_state_cache enable_kv_events enable_lazy_memory_allocator
enable_p2p enable_pd enable_scheduler_bypass_lookup external_lookup_client extra_config
gds_backend gds_buffer_size gds_path gds_path_sharding hidden_state_layers
hidden_states_retrieve_mode hit_miss_ratio internal_api_server_enabled internal_api_server_host
internal_api_server_include_index_list internal_api_server_port_start
internal_api_server_socket_path_prefix lazy_memory_expand_trigger_ratio lazy_memory_initial_ratio
lazy_memory_safe_size lazy_memory_step_ratio lmcache_instance_id
lmcache_worker_heartbeat_delay_time lmcache_worker_heartbeat_time lmcache_worker_ids
lmcache_worker_ports local_cpu local_cpu_use_hugepages local_disk local_disk_path_sharding
lookup_server_worker_ids lookup_timeout_ms maru_path maru_pool_size max_hidden_state_cpu_size
max_local_cpu_size max_local_disk_size min_retrieve_tokens mp_host mp_port nixl_backends
nixl_buffer_device nixl_buffer_size numa_mode p2p_host p2p_init_ports p2p_lookup_ports
pd_allocation_timeout_sec pd_backend_mode pd_bidirectional pd_buffer_device pd_buffer_size
pd_condition_poll_interval_sec pd_max_prefill_len pd_peer_alloc_port pd_peer_host
pd_peer_init_port pd_peer_query_port pd_proxy_host pd_proxy_port pd_role pd_shutdown_timeout_sec
pd_skip_proxy_notification pin_check_interval_sec pin_timeout_sec pre_caching_hash_algorithm
priority_limit py_enable_gc remote_config_url remote_serde remote_storage_plugins remote_url
reserve_local_cpu_size retrieve_locations run_script_api_enabled runtime_plugin_locations
save_decode_cache save_unfull_chunk script_allowed_imports storage_plugins store_location
transfer_channel use_gds use_gpu_connector_v3 use_layerwise
controller_url enable_xpyd external_backends lmcache_worker_port nixl_peer_alloc_port
nixl_peer_host nixl_peer_init_port nixl_proxy_host nixl_proxy_port nixl_role plugin_locations
{{- end -}}

{{/* Is `.key` an LMCache 0.5.6 config key (ec_* erasure-coding keys included)? */}}
{{- define "pdstack.lmcache.isKnownKey" -}}
{{- if or (has .key (splitList " " (include "pdstack.lmcache.knownKeys" . | replace "\n" " "))) (hasPrefix "ec_" .key) }}true{{ end -}}
{{- end -}}

{{/*
Engine securityContexts: the values' own, plus what Pod Security "restricted" requires where the
values set nothing, when servingEngineSpec.podSecurityLevel is restricted. Values always win.
*/}}
{{- define "pdstack.engine.podSecurityContext" -}}
{{- $ses := .Values.servingEngineSpec -}}
{{- $sc := deepCopy ($ses.securityContext | default dict) -}}
{{- if eq (default "baseline" $ses.podSecurityLevel) "restricted" -}}
{{- $sc = merge $sc (dict "runAsNonRoot" true "runAsUser" 1000 "runAsGroup" 1000 "fsGroup" 1000 "seccompProfile" (dict "type" "RuntimeDefault")) -}}
{{- end -}}
{{- toYaml $sc -}}
{{- end -}}

{{- define "pdstack.engine.containerSecurityContext" -}}
{{- $ses := .root.Values.servingEngineSpec -}}
{{- $sc := merge (deepCopy (.spec.containerSecurityContext | default dict)) ($ses.containerSecurityContext | default dict) -}}
{{- if eq (default "baseline" $ses.podSecurityLevel) "restricted" -}}
{{- $sc = merge $sc (dict "allowPrivilegeEscalation" false "capabilities" (dict "drop" (list "ALL"))) -}}
{{- end -}}
{{- toYaml $sc -}}
{{- end -}}
