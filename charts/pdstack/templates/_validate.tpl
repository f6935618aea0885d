{{/*
Rules across values that a JSON schema cannot express. Each `fail` names the value to change.
Rendered (to nothing) by validate.yaml, so every install, template and lint runs them.
*/}}
{{- define "pdstack.validate" -}}
{{- $root := . -}}
{{- $ses := .Values.servingEngineSpec -}}
{{- $rs := .Values.routerSpec -}}
{{- $prefix := include "pdstack.fullname" . -}}
{{- $byModel := dict -}}
{{- $names := dict -}}
{{- if $ses.enableEngine -}}
{{- range $i, $spec := $ses.modelSpec -}}
{{- if ne (toString $spec.enabled) "false" -}}
{{- $ctx := dict "root" $root "spec" $spec -}}
{{- $at := printf "servingEngineSpec.modelSpec[%d]" $i -}}
{{- if hasKey $names $spec.name -}}
{{- fail (printf "%s.name: %q is used by modelSpec[%v] too; spec names must be unique" $at $spec.name (get $names $spec.name)) -}}
{{- end -}}
{{- $_ := set $names $spec.name $i -}}
{{- $svc := include "pdstack.engine.serviceName" $ctx -}}
{{- if gt (len $svc) 63 -}}
{{- fail (printf "%s.name: Service name %q is longer than 63 characters; shorten the spec name, the release name, or set fullnameOverride" $at $svc) -}}
{{- end -}}
{{- $connector := include "pdstack.engine.connector" $ctx -}}
{{- $lc := $spec.lmcacheConfig | default dict -}}
{{- $vc := $spec.vllmConfig | default dict -}}
{{- if and (ne $spec.role "both") (not $connector) -}}
{{- fail (printf "%s.kvTransfer.connector is required: role %q moves KV between engines (NixlConnector, LMCacheConnectorV1, P2pNcclConnector, MultiConnector)" $at $spec.role) -}}
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
{{- if not (has "LMCacheConnectorV1" (splitList "," (include "pdstack.engine.connectorSet" $ctx))) -}}
{{- fail (printf "%s.kvTransfer.connector: lmcacheConfig.enablePD needs LMCacheConnectorV1, got %s" $at $connector) -}}
{{- end -}}
{{- $wantRole := ternary "sender" "receiver" (eq $spec.role "prefill") -}}
{{- if and $lc.pdRole (ne $lc.pdRole $wantRole) -}}
{{- fail (printf "%s.lmcacheConfig.pdRole: role %s must be LMCache %q, got %q" $at $spec.role $wantRole $lc.pdRole) -}}
{{- end -}}
{{- end -}}
{{- $gpu := int64 (default 0 (default $spec.requestGPU ($spec.resources | default dict).gpu)) -}}
{{- $ranks := mul (int64 (default 1 $vc.tensorParallelSize)) (int64 (default 1 $vc.pipelineParallelSize)) -}}
{{- if and (gt $gpu 0) (lt $gpu $ranks) -}}
{{- fail (printf "%s.resources.gpu: tensorParallelSize x pipelineParallelSize = %d GPUs, but only %d requested" $at $ranks $gpu) -}}
{{- end -}}
{{- /* Collect what must agree between the specs that serve one model. */ -}}
{{- $model := include "pdstack.engine.servedModelName" $ctx -}}
{{- $entry := dict "index" $i "name" $spec.name "role" $spec.role "modelURL" $spec.modelURL "modelRevision" (toString (default "" $spec.modelRevision)) "blockSize" (toString (default "" $vc.blockSize)) "pythonHashSeed" (include "pdstack.engine.pythonHashSeed" $ctx) "dtype" (toString (default "" $vc.dtype)) "kvCacheDtype" (toString (default "" $vc.kvCacheDtype)) "transport" (include "pdstack.engine.transport" $ctx) -}}
{{- $_ := set $byModel $model (append (get $byModel $model | default list) $entry) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $pdTransports := dict -}}
{{- range $model, $entries := $byModel -}}
{{- $roles := list -}}
{{- $first := first $entries -}}
{{- range $e := $entries -}}
{{- $roles = append $roles $e.role -}}
{{- $at := printf "servingEngineSpec.modelSpec[%d]" (int $e.index) -}}
{{- range $field := list "modelURL" "modelRevision" -}}
{{- if ne (get $e $field) (get $first $field) -}}
{{- fail (printf "%s.%s: specs %q and %q serve model %q but load different weights (%q vs %q); prefill and decode of one model must load the same model" $at $field $first.name $e.name $model (get $first $field) (get $e $field)) -}}
{{- end -}}
{{- end -}}
{{- range $field := list "blockSize" "dtype" "kvCacheDtype" -}}
{{- if ne (get $e $field) (get $first $field) -}}
{{- fail (printf "%s.vllmConfig.%s: specs %q and %q serve model %q with different %s (%q vs %q); transferred KV blocks would not line up" $at $field $first.name $e.name $model $field (get $first $field) (get $e $field)) -}}
{{- end -}}
{{- end -}}
{{- if ne $e.pythonHashSeed $first.pythonHashSeed -}}
{{- fail (printf "%s.pythonHashSeed: specs %q and %q serve model %q with different PYTHONHASHSEED (%q vs %q); prefix hashes would differ" $at $first.name $e.name $model $first.pythonHashSeed $e.pythonHashSeed) -}}
{{- end -}}
{{- if ne $e.role "both" -}}
{{- $_ := set $pdTransports $e.transport (printf "%s (%s)" $at $e.name) -}}
{{- end -}}
{{- end -}}
{{- if or (has "prefill" $roles) (has "decode" $roles) -}}
{{- if not (has "prefill" $roles) -}}
{{- fail (printf "servingEngineSpec.modelSpec: model %q has a decode spec but no spec with role: prefill" $model) -}}
{{- end -}}
{{- if not (has "decode" $roles) -}}
{{- fail (printf "servingEngineSpec.modelSpec: model %q has a prefill spec but no spec with role: decode" $model) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (gt (len $pdTransports) 1) (not $rs.pd.kvTransport) -}}
{{- fail (printf "servingEngineSpec.modelSpec: prefill/decode specs imply different KV transports %v; the router speaks one (set the same connector everywhere, or routerSpec.pd.kvTransport)" (keys $pdTransports | sortAlpha)) -}}
{{- end -}}
{{- if $rs.enableRouter -}}
{{- $disagg := include "pdstack.router.isDisagg" . -}}
{{- if eq $rs.serviceDiscovery "static" -}}
{{- if or (not $rs.staticBackends) (not $rs.staticModels) -}}
{{- fail "routerSpec.staticBackends and routerSpec.staticModels are required when routerSpec.serviceDiscovery is static" -}}
{{- end -}}
{{- else -}}
{{- if and $pdTransports (not $disagg) -}}
{{- fail (printf "routerSpec.routingLogic: %q cannot serve prefill/decode specs; use disagg_prefill (or disaggregated_prefill)" $rs.routingLogic) -}}
{{- end -}}
{{- if and $disagg (not $pdTransports) -}}
{{- fail "routerSpec.routingLogic: disagg_prefill needs model specs with role: prefill and role: decode in servingEngineSpec.modelSpec" -}}
{{- end -}}
{{- end -}}
{{- if include "pdstack.router.usesLmcacheProxy" . -}}
{{- if ne (int $rs.replicaCount) 1 -}}
{{- fail (printf "routerSpec.replicaCount must be 1 with the lmcache KV transport (got %v): prefill engines send their KV-ready notification to one router address, so it must be the router that sent the request" $rs.replicaCount) -}}
{{- end -}}
{{- if $rs.autoscaling.enabled -}}
{{- fail "routerSpec.autoscaling.enabled must be false with the lmcache KV transport: it needs exactly one router replica" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
