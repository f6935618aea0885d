{{/*
OpenTelemetry tracing (values `tracing`): one endpoint and one sampler for the router and every
engine. Both read the standard OTEL_* variables; vLLM also needs --otlp-traces-endpoint.
*/}}

{{/* The OTLP traces endpoint as both SDKs take it: the base URL for grpc, .../v1/traces for http. */}}
{{- define "pdstack.tracing.endpoint" -}}
{{- $t := .Values.tracing -}}
{{- $base := trimSuffix "/" $t.endpoint -}}
{{- if eq $t.protocol "http/protobuf" -}}
{{- printf "%s/v1/traces" $base -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{/* Env vars for a traced container; dict "root" . "service" <OTEL_SERVICE_NAME>. */}}
{{- define "pdstack.tracing.env" -}}
{{- $t := .root.Values.tracing -}}
{{- if $t.enabled }}
- name: OTEL_SERVICE_NAME
  value: {{ .service | quote }}
- name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
  value: {{ include "pdstack.tracing.endpoint" .root | quote }}
- name: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
  value: {{ $t.protocol | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ include "pdstack.num" $t.samplerArg | quote }}
{{- end }}
{{- end -}}

{{/* Fails the render when tracing is on without a collector to send to. */}}
{{- define "pdstack.tracing.validate" -}}
{{- if and .Values.tracing.enabled (not .Values.tracing.endpoint) -}}
{{- fail "tracing.endpoint is required when tracing.enabled is true: the collector's OTLP URL, e.g. http://otel-collector.observability:4317" -}}
{{- end -}}
{{- end -}}
