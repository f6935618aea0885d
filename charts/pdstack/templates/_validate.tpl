{{/*
Rules across values that a JSON schema cannot express. Each `fail` names the value to change.
Rendered (to nothing) by validate.yaml, so every install, template and lint runs them.
They catch, at render time, what would otherwise fail late: in a crash-looping pod, a request
that times out, or a node drain that never ends.
*/}}
{{- define "pdstack.validate" -}}
{{- $root := . -}}
{{- $rs := .Values.routerSpec -}}
{{- $byModel := dict -}}
{{- $names := dict -}}
{{- $metricsUsers := list -}}
{{- range $spec := (include "pdstack.engine.enabledSpecs" . | fromYamlArray) -}}
{{- $ctx := dict "root" $root "spec" $spec -}}
{{- $at := printf "servingEngineSpec.modelSpec[%v]" $spec._index -}}
{{- include "pdstack.validate.spec" (dict "root" $root "spec" $spec "at" $at "names" $names) -}}
{{- $_ := set $names $spec.name $spec._index -}}
{{- $as := $spec.autoscaling | default dict -}}
{{- if $as.enabled }}{{ $metricsUsers = append $metricsUsers (printf "%s.autoscaling" $at) }}{{ end -}}
{{- /* Collect what must agree between the specs that serve one model. */ -}}
{{- $vc := $spec.vllmConfig | default dict -}}
{{- $model := include "pdstack.engine.servedModelName" $ctx -}}
{{- $entry := dict "at" $at "name" $spec.name "role" $spec.role "modelURL" $spec.modelURL "modelRevision" (toString (default "" $spec.modelRevision)) "blockSize" (toString (default "" $vc.blockSize)) "pythonHashSeed" (include "pdstack.engine.pythonHashSeed" $ctx) "dtype" (toString (default "" $vc.dtype)) "kvCacheDtype" (toString (default "" $vc.kvCacheDtype)) "transport" (include "pdstack.engine.transport" $ctx) "tp" (include "pdstack.engine.tensorParallelSize" $ctx) -}}
{{- $_ := set $byModel $model (append (get $byModel $model | default list) $entry) -}}
{{- end -}}
{{- $pdTransports := dict -}}
{{- range $model, $entries := $byModel -}}
{{- $roles := list -}}
{{- $first := first $entries -}}
{{- range $e := $entries -}}
{{- $roles = append $roles $e.role -}}
{{- range $field := list "modelURL" "modelRevision" -}}
{{- if ne (get $e $field) (get $first $field) -}}
{{- fail (printf "%s.%s: specs %q and %q serve model %q but load different weights (%q vs %q); prefill and decode of one model must load the same model" $e.at $field $first.name $e.name $model (get $first $field) (get $e $field)) -}}
{{- end -}}
{{- end -}}
{{- range $field := list "blockSize" "dtype" "kvCacheDtype" -}}
{{- if ne (get $e $field) (get $first $field) -}}
{{- fail (printf "%s.vllmConfig.%s: specs %q and %q serve model %q with different %s (%q vs %q); transferred KV blocks would not line up" $e.at $field $first.name $e.name $model $field (get $first $field) (get $e $field)) -}}
{{- end -}}
{{- end -}}
{{- if ne $e.pythonHashSeed $first.pythonHashSeed -}}
{{- fail (printf "%s.pythonHashSeed: specs %q and %q serve model %q with different PYTHONHASHSEED (%q vs %q); prefix hashes would differ" $e.at $first.name $e.name $model $first.pythonHashSeed $e.pythonHashSeed) -}}
{{- end -}}
{{- if ne $e.role "both" -}}
{{- $_ := set $pdTransports $e.transport (printf "%s (%s)" $e.at $e.name) -}}
{{- end -}}
{{- end -}}
{{- if or (has "prefill" $roles) (has "decode" $roles) -}}
{{- if not (has "prefill" $roles) -}}
{{- fail (printf "servingEngineSpec.modelSpec: model %q has a decode spec but no spec with role: prefill" $model) -}}
{{- end -}}
{{- if not (has "decode" $roles) -}}
{{- fail (printf "servingEngineSpec.modelSpec: model %q has a prefill spec but no spec with role: decode" $model) -}}
{{- end -}}
{{- /* A prefiller's KV is cut per TP rank; a decoder with fewer ranks has no peer for the extra shards. */ -}}
{{- range $p := $entries -}}
{{- range $d := $entries -}}
{{- if and (eq $p.role "prefill") (eq $d.role "decode") (gt (int $p.tp) (int $d.tp)) -}}
{{- fail (printf "%s.vllmConfig.tensorParallelSize: prefill spec %q runs tensor parallel %v but decode spec %q of model %q only %v; the prefill TP size must not exceed the decode TP size (KV is sent per TP rank)" $p.at $p.name $p.tp $d.name $model $d.tp) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (gt (len $pdTransports) 1) (not $rs.pd.kvTransport) -}}
{{- fail (printf "servingEngineSpec.modelSpec: prefill/decode specs imply different KV transports %v; the router speaks one (set the same connector everywhere, or routerSpec.pd.kvTransport)" (keys $pdTransports | sortAlpha)) -}}
{{- end -}}
{{- if $rs.enableRouter -}}
{{- include "pdstack.validate.router" (dict "root" $root "pdTransports" $pdTransports) -}}
{{- end -}}
{{- include "pdstack.validate.networkPolicy" (dict "root" $root "metricsUsers" $metricsUsers) -}}
{{- end -}}

{{/* Rules of one enabled model spec; arg: (dict "root" $ "spec" $spec "at" "servingEngineSpec.modelSpec[i]" "names" seen). */}}
{{- define "pdstack.validate.spec" -}}
{{- $root := .root -}}
{{- $spec := .spec -}}
{{- $at := .at -}}
{{- $ctx := dict "root" $root "spec" $spec -}}
{{- $ann := $root.Chart.Annotations -}}
{{- $ses := $root.Values.servingEngineSpec -}}
{{- if eq (default "baseline" $ses.podSecurityLevel) "restricted" -}}
{{- range $field := list "hostIPC" "hostPID" "hostNetwork" -}}
{{- if ternary (get $spec $field) (get $ses $field) (hasKey $spec $field) -}}
{{- fail (printf "%s.%s: Pod Security level restricted (servingEngineSpec.podSecurityLevel) does not allow %s" $at $field $field) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if hasKey .names $spec.name -}}
{{- fail (printf "%s.name: %q is used by modelSpec[%v] too; spec names must be unique" $at $spec.name (get .names $spec.name)) -}}
{{- end -}}
{{- $svc := include "pdstack.engine.serviceName" $ctx -}}
{{- if gt (len $svc) 63 -}}
{{- fail (printf "%s.name: Service name %q is longer than 63 characters; shorten the spec name, the release name, or set fullnameOverride" $at $svc) -}}
{{- end -}}
{{- $connector := include "pdstack.engine.connector" $ctx -}}
{{- $connectors := splitList "," (include "pdstack.engine.connectorSet" $ctx) -}}
{{- $lc := $spec.lmcacheConfig | default dict -}}
{{- $kt := $spec.kvTransfer | default dict -}}
{{- $vc := $spec.vllmConfig | default dict -}}
{{- if and $spec._roleDefaulted (or (has "NixlConnector" $connectors) $lc.enablePD (has (toString $kt.role) (list "kv_producer" "kv_consumer"))) -}}
{{- fail (printf "%s.role is required: this spec moves KV between engines (%s), so say whether it is the prefill or the decode side (role: prefill | decode); specs without KV transfer default to role: both" $at (default "lmcacheConfig.enablePD" $connector)) -}}
{{- end -}}
{{- if and (ne $spec.role "both") (not $connector) -}}
{{- fail (printf "%s.kvTransfer.connector is required: role %q moves KV between engines (NixlConnector, LMCacheConnectorV1, MultiConnector)" $at $spec.role) -}}
{{- end -}}
{{- if and (ne $spec.role "both") (eq $connector "OffloadingConnector") -}}
{{- fail (printf "%s.kvTransfer.connector: OffloadingConnector only offloads to host memory and cannot move KV from prefill to decode; use it with role both or inside a MultiConnector" $at) -}}
{{- end -}}
{{- if and $lc.enablePD (not $lc.enabled) -}}
{{- fail (printf "%s.lmcacheConfig.enablePD needs lmcacheConfig.enabled: true" $at) -}}
{{- end -}}
{{- if include "pdstack.engine.lmcachePD" $ctx -}}
{{- if eq $spec.role "both" -}}
{{- fail (printf "%s.lmcacheConfig.enablePD: LMCache PD needs role prefill (sender) or decode (receiver), not both" $at) -}}
{{- end -}}
{{- if not (has "LMCacheConnectorV1" $connectors) -}}
{{- fail (printf "%s.kvTransfer.connector: lmcacheConfig.enablePD needs LMCacheConnectorV1, got %s" $at $connector) -}}
{{- end -}}
{{- $wantRole := ternary "sender" "receiver" (eq $spec.role "prefill") -}}
{{- if and $lc.pdRole (ne $lc.pdRole $wantRole) -}}
{{- fail (printf "%s.lmcacheConfig.pdRole: role %s must be LMCache %q, got %q" $at $spec.role $wantRole $lc.pdRole) -}}
{{- end -}}
{{- end -}}
{{- /* GPUs: every tensor, pipeline and data parallel rank of the pod needs one. */ -}}
{{- $gpu := int64 (default 0 (default $spec.requestGPU ($spec.resources | default dict).gpu)) -}}
{{- $ranks := int64 (include "pdstack.engine.ranks" $ctx) -}}
{{- if and (gt $gpu 0) (lt $gpu $ranks) -}}
{{- fail (printf "%s.resources.gpu: tensorParallelSize x pipelineParallelSize x dataParallelSize = %d GPUs, but only %d requested (all data parallel ranks of a spec run in its pod)" $at $ranks $gpu) -}}
{{- end -}}
{{- /* Images known not to work with what the chart renders. */ -}}
{{- $img := include "pdstack.engine.imageParts" $ctx | fromYaml -}}
{{- $cmd := include "pdstack.engine.command" $ctx | fromYamlArray -}}
{{- $cmdAt := ternary (printf "%s.command" $at) "servingEngineSpec.command" (hasKey $spec "command") -}}
{{- $tested := printf "vLLM %s / NIXL %s / LMCache %s" (index $ann "pdstack.io/tested-vllm") (index $ann "pdstack.io/tested-nixl") (index $ann "pdstack.io/tested-lmcache") -}}
{{- if regexMatch `(^|/)lmcache/vllm-openai$` $img.repository -}}
{{- if eq (toString (first $cmd)) "vllm" -}}
{{- fail (printf "%s: the %s image keeps vllm in /opt/venv/bin, which is not on its PATH, so `vllm serve` would not start; set %s: [\"/opt/venv/bin/vllm\"]" $cmdAt $img.repository $cmdAt) -}}
{{- end -}}
{{- if include "pdstack.engine.lmcachePD" $ctx -}}
{{- $old := false -}}
{{- $ver := regexFind `^v?[0-9]+\.[0-9]+\.[0-9]+` $img.tag -}}
{{- if $ver -}}
{{- $p := splitList "." (trimPrefix "v" $ver) -}}
{{- $old = lt (add (mul (atoi (index $p 0)) 1000000) (mul (atoi (index $p 1)) 1000) (atoi (index $p 2))) 3007 -}}
{{- else -}}
{{- $date := regexFind `20[0-9][0-9]-[0-9][0-9]-[0-9][0-9]` $img.tag -}}
{{- if $date }}{{ $old = lt (atoi (replace "-" "" $date)) 20250913 }}{{ end -}}
{{- end -}}
{{- if $old -}}
{{- fail (printf "%s: %s:%s predates LMCache's PD protocol (the pd_* and transfer_channel config keys the chart writes and the disagg_spec requests the router sends arrived in LMCache 0.3.7), so engines would start and no KV would ever reach the decoder; use %s:v%s, the image of the tested %s set (docs/chart.md)" $img.at $img.repository $img.tag $img.repository (index $ann "pdstack.io/tested-lmcache") $tested) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (regexMatch `(^|/)vllm-(arm64-)?cpu-release-repo$` $img.repository) (include "pdstack.engine.usesNixl" $ctx) (eq (toString (first $cmd)) "vllm") -}}
{{- fail (printf "%s: vLLM's CPU image %s has no NIXL, which NixlConnector needs; install it before vllm starts (as values/values-cpu.yaml does with pip install --no-deps nixl==%s nixl-cu12==%s) or use an image that has it" $cmdAt $img.repository (index $ann "pdstack.io/tested-nixl") (index $ann "pdstack.io/tested-nixl")) -}}
{{- end -}}
{{- /* LMCache ignores keys it does not know (it logs a warning): refuse them here. */ -}}
{{- range $k, $_ := ($lc.additionalConfig | default dict) -}}
{{- if not (include "pdstack.lmcache.isKnownKey" (dict "key" $k)) -}}
{{- fail (printf "%s.lmcacheConfig.additionalConfig.%s: not an LMCache %s config key; LMCache would log a warning and run without it (check the spelling, or use the chart's own lmcacheConfig keys)" $at $k (index $ann "pdstack.io/tested-lmcache")) -}}
{{- end -}}
{{- end -}}
{{- if eq $connector "LMCacheConnectorV1" -}}
{{- range $k, $_ := ($kt.extraConfig | default dict) -}}
{{- $plain := list "discard_partial_chunks" "skip_last_n_tokens" "lmcache_rpc_port" "use_native" "use_layerwise" -}}
{{- $sub := trimPrefix "lmcache." $k -}}
{{- $known := or (has $k $plain) (and (hasPrefix "lmcache." $k) (or (include "pdstack.lmcache.isKnownKey" (dict "key" $sub)) (eq $sub "max_tokens_per_load") (hasPrefix "mp." $sub))) -}}
{{- if not $known -}}
{{- fail (printf "%s.kvTransfer.extraConfig.%s: LMCacheConnectorV1 does not read this key (it reads %s, and lmcache.<key> for LMCache %s config keys); it would be ignored" $at $k (join ", " $plain) (index $ann "pdstack.io/tested-lmcache")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* Autoscaling to zero: only KEDA can, and only with a query that sees demand while no engine runs. */ -}}
{{- $as := $spec.autoscaling | default dict -}}
{{- if and $as.enabled (hasKey $as "minReplicas") (eq (int $as.minReplicas) 0) -}}
{{- if eq (default "hpa" $as.kind) "hpa" -}}
{{- fail (printf "%s.autoscaling.minReplicas: 0 needs kind: keda; a HorizontalPodAutoscaler cannot scale a Deployment to zero (HPAScaleToZero is an alpha feature gate), so set minReplicas to 1 or use KEDA" $at) -}}
{{- end -}}
{{- if not ($as.keda | default dict).query -}}
{{- fail (printf "%s.autoscaling.keda.query is required with minReplicas: 0: the default query reads the engines' own vllm:num_requests_waiting, which does not exist while no engine runs, so KEDA would never scale the spec up again; use a query that sees demand without engines, e.g. sum(rate(pdstack_router_requests_total{model=%q}[2m]))" $at (include "pdstack.engine.servedModelName" $ctx)) -}}
{{- end -}}
{{- end -}}
{{- /* A PodDisruptionBudget that allows no eviction blocks every node drain. */ -}}
{{- $replicas := ternary (int (default 1 $as.minReplicas)) (int (ternary $spec.replicaCount 1 (hasKey $spec "replicaCount"))) (and (hasKey $as "enabled") $as.enabled) -}}
{{- with include "pdstack.validate.pdbBlocks" (dict "pdb" ($spec.pdb | default dict) "replicas" $replicas) -}}
{{- fail (printf "%s.pdb: %s" $at .) -}}
{{- end -}}
{{- end -}}

{{/* Why a PDB blocks node drains, or nothing; arg: (dict "pdb" $pdb "replicas" n). */}}
{{- define "pdstack.validate.pdbBlocks" -}}
{{- $pdb := .pdb -}}
{{- if and $pdb.enabled (gt .replicas 0) -}}
{{- if not (kindIs "invalid" $pdb.maxUnavailable) -}}
{{- if has (toString $pdb.maxUnavailable) (list "0" "0%") -}}
maxUnavailable {{ $pdb.maxUnavailable }} allows no eviction, so every node drain would wait forever; use maxUnavailable: 1
{{- end -}}
{{- else -}}
{{- $min := toString (ternary $pdb.minAvailable 1 (hasKey $pdb "minAvailable")) -}}
{{- if or (eq $min "100%") (and (regexMatch `^[0-9]+$` $min) (ge (atoi $min) .replicas)) -}}
minAvailable {{ $min }} with {{ .replicas }} replica(s) allows no eviction, so every node drain would wait forever; run more replicas or use maxUnavailable: 1
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Router rules; arg: (dict "root" $ "pdTransports" {transport: where}). */}}
{{- define "pdstack.validate.router" -}}
{{- $root := .root -}}
{{- $rs := $root.Values.routerSpec -}}
{{- $disagg := include "pdstack.router.isDisagg" $root -}}
{{- if eq $rs.routingLogic "kvaware" -}}
{{- fail "routerSpec.routingLogic: kvaware (production-stack's routing through LMCache's controller) is not supported; use prefix_aware (the router hashes prompt prefixes and sends repeats to the engine that served them)" -}}
{{- end -}}
{{- if eq $rs.serviceDiscovery "static" -}}
{{- if or (not $rs.staticBackends) (not $rs.staticModels) -}}
{{- fail "routerSpec.staticBackends and routerSpec.staticModels are required when routerSpec.serviceDiscovery is static" -}}
{{- end -}}
{{- else -}}
{{- if and .pdTransports (not $disagg) -}}
{{- fail (printf "routerSpec.routingLogic: %q cannot serve prefill/decode specs; use disagg_prefill (or disaggregated_prefill)" $rs.routingLogic) -}}
{{- end -}}
{{- if and $disagg (not .pdTransports) -}}
{{- fail "routerSpec.routingLogic: disagg_prefill needs model specs with role: prefill and role: decode in servingEngineSpec.modelSpec" -}}
{{- end -}}
{{- end -}}
{{- if include "pdstack.router.usesLmcacheProxy" $root -}}
{{- if ne (int $rs.replicaCount) 1 -}}
{{- fail (printf "routerSpec.replicaCount must be 1 with the lmcache KV transport (got %v): prefill engines send their KV-ready notification to one router address, so it must be the router that sent the request" $rs.replicaCount) -}}
{{- end -}}
{{- if $rs.autoscaling.enabled -}}
{{- fail "routerSpec.autoscaling.enabled must be false with the lmcache KV transport: it needs exactly one router replica" -}}
{{- end -}}
{{- if gt (int $rs.workers) 1 -}}
{{- fail (printf "routerSpec.workers must be 1 with the lmcache KV transport (got %v): the KV-ready notifications arrive on one port, which one worker process owns, so requests of the other workers would wait for them until they time out" $rs.workers) -}}
{{- end -}}
{{- end -}}
{{- $replicas := ternary (int $rs.autoscaling.minReplicas) (int $rs.replicaCount) (and $rs.autoscaling.enabled true) -}}
{{- with include "pdstack.validate.pdbBlocks" (dict "pdb" $rs.pdb "replicas" $replicas) -}}
{{- fail (printf "routerSpec.pdb: %s" .) -}}
{{- end -}}
{{- /* production-stack's router flags: our router would exit with "unrecognized arguments". */ -}}
{{- $foreign := dict
  "--prefill-model-labels" "the router reads each engine's role from its pdstack.io/role pod label (modelSpec[].role)"
  "--decode-model-labels" "the router reads each engine's role from its pdstack.io/role pod label (modelSpec[].role)"
  "--prefiller-model" "the router reads each engine's role from its pdstack.io/role pod label (modelSpec[].role)"
  "--decoder-model" "the router reads each engine's role from its pdstack.io/role pod label (modelSpec[].role)"
  "--k8s-service-discovery-type" "the router always routes to pod IPs"
  "--engine-stats-interval" "use routerSpec.engineScrapeInterval"
  "--static-model-labels" "use routerSpec.staticRoles"
  "--static-model-types" "the router serves every OpenAI route of every engine"
  "--static-aliases" "set modelSpec[].servedModelName"
  "--static-backend-health-checks" "the router always checks engine health"
  "--kv-aware-threshold" "kvaware routing is not supported (use prefix_aware)"
  "--lmcache-controller-port" "kvaware routing is not supported (use prefix_aware)"
  "--prefix-min-match-length" "prefix_aware routing is tuned with --prefix-chunk-chars"
  "--max-instance-failover-reroute-attempts" "use routerSpec.pd.prefillMaxRetries and decodeMaxRetries"
  "--log-stats" "the router exports its statistics on /metrics"
  "--dynamic-config-yaml" "settings come from routerSpec (or --config)"
  "--dynamic-config-json" "settings come from routerSpec (or --config)"
  "--feature-gates" "production-stack's feature gates do not exist here"
  "--callbacks" "production-stack's callbacks do not exist here"
  "--request-rewriter" "production-stack's request rewriters do not exist here"
  "--enable-batch-api" "the batch API is not supported" -}}
{{- range $i, $arg := ($rs.extraArgs | default list) -}}
{{- $flag := first (splitList "=" (toString $arg)) -}}
{{- if hasKey $foreign $flag -}}
{{- fail (printf "routerSpec.extraArgs[%d]: %s is a production-stack router flag that pdstack-router does not have (it would exit with \"unrecognized arguments\"); %s" $i $flag (get $foreign $flag)) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* NetworkPolicy: never block the metrics that autoscaling and monitoring read. */}}
{{- define "pdstack.validate.networkPolicy" -}}
{{- $root := .root -}}
{{- $np := $root.Values.networkPolicy -}}
{{- if and $np.enabled (not $np.metricsIngressFrom) -}}
{{- $users := .metricsUsers -}}
{{- if and (include "pdstack.engine.enabledSpecs" $root | fromYamlArray) (include "pdstack.serviceMonitor.enabled" (dict "root" $root "sm" $root.Values.servingEngineSpec.serviceMonitor)) -}}
{{- $users = append $users "servingEngineSpec.serviceMonitor" -}}
{{- end -}}
{{- if $users -}}
{{- fail (printf "networkPolicy.metricsIngressFrom is empty, so the engines' NetworkPolicy would block Prometheus from their /metrics, which %s read; list the pods that scrape them, e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]" (join ", " $users)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
