{{/*
Names, labels, and the broker configuration the ConfigMap renders.
*/}}

{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "mqttd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already holds the chart name. */}}
{{- define "mqttd.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mqttd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mqttd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mqttd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mqttd.labels" -}}
helm.sh/chart: {{ include "mqttd.chart" . }}
{{ include "mqttd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mqttd
{{- end }}

{{- define "mqttd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mqttd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mqttd.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "mqttd.headlessServiceName" -}}
{{- printf "%s-headless" (include "mqttd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mqttd.metricsServiceName" -}}
{{- printf "%s-metrics" (include "mqttd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Whether TLS listeners exist. */}}
{{- define "mqttd.tlsEnabled" -}}
{{- if ne .Values.tls.mode "none" }}true{{ end }}
{{- end }}

{{/* The Secret holding tls.crt and tls.key. */}}
{{- define "mqttd.tlsSecretName" -}}
{{- if eq .Values.tls.mode "certManager" }}
{{- printf "%s-tls" (include "mqttd.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- .Values.tls.existingSecret }}
{{- end }}
{{- end }}

{{/* The Secret holding the client CA (ca.crt). */}}
{{- define "mqttd.clientCASecretName" -}}
{{- default (include "mqttd.tlsSecretName" .) .Values.tls.clientCASecret }}
{{- end }}

{{- define "mqttd.clientAuthEnabled" -}}
{{- if and (include "mqttd.tlsEnabled" .) (ne .Values.tls.clientAuth "none") }}true{{ end }}
{{- end }}

{{/*
Listeners that are on, as a list of dicts {name, kind, port, tls}: the order
of the Service and container ports.
*/}}
{{- define "mqttd.activeListeners" -}}
{{- $tls := include "mqttd.tlsEnabled" . }}
{{- $out := list }}
{{- range $name, $kind := dict "mqtt" "tcp" "mqtts" "tls" "ws" "ws" "wss" "wss" }}
{{- $l := index $.Values.listeners $name }}
{{- $secure := or (eq $kind "tls") (eq $kind "wss") }}
{{- if and $l.enabled (or (not $secure) $tls) }}
{{- $out = append $out (dict "name" $name "kind" $kind "port" $l.containerPort "secure" $secure) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The listeners section of the broker config, built from the values above.
*/}}
{{- define "mqttd.listenersConfig" -}}
{{- $listeners := list }}
{{- range (include "mqttd.activeListeners" . | fromJsonArray) }}
{{- $l := dict "name" .name "kind" .kind "bind" (printf "0.0.0.0:%v" .port) }}
{{- if .secure }}
{{- $t := dict "cert_file" "/etc/mqttd/tls/tls.crt" "key_file" "/etc/mqttd/tls/tls.key" "client_auth" $.Values.tls.clientAuth }}
{{- if include "mqttd.clientAuthEnabled" $ }}
{{- $_ := set $t "client_ca_file" "/etc/mqttd/client-ca/ca.crt" }}
{{- end }}
{{- $_ := set $l "tls" $t }}
{{- end }}
{{- $listeners = append $listeners $l }}
{{- end }}
{{- toJson $listeners }}
{{- end }}

{{/*
Deep merge: copies every key of .src into .dst, recursing where both hold a
map. Unlike sprig's mergeOverwrite, false, 0 and "" in .src do override.
*/}}
{{- define "mqttd.mergeInto" -}}
{{- $dst := .dst }}
{{- range $k, $v := .src }}
{{- $old := get $dst $k }}
{{- if and (kindIs "map" $v) (kindIs "map" $old) }}
{{- include "mqttd.mergeInto" (dict "dst" $old "src" $v) }}
{{- else }}
{{- $_ := set $dst $k $v }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The broker configuration: what the chart derives from its values, with
.Values.config merged over it.
*/}}
{{- define "mqttd.config" -}}
{{- $cfg := dict
  "listeners" (include "mqttd.listenersConfig" . | fromJsonArray)
  "http" (dict "bind" (printf "0.0.0.0:%v" .Values.http.port))
  "control" (dict "socket" "/run/mqttd/mqttd.sock")
  "storage" (dict "data_dir" "/var/lib/mqttd")
  "auth" (dict)
}}
{{- if .Values.auth.passwordFile.secretName }}
{{- $_ := set $cfg.auth "password_file" (printf "/etc/mqttd/auth/passwords/%s" .Values.auth.passwordFile.key) }}
{{- end }}
{{- if .Values.auth.aclFile.secretName }}
{{- $_ := set $cfg.auth "acl_file" (printf "/etc/mqttd/auth/acl/%s" .Values.auth.aclFile.key) }}
{{- end }}
{{- include "mqttd.mergeInto" (dict "dst" $cfg "src" (deepCopy .Values.config)) }}
{{- toYaml $cfg }}
{{- end }}

{{/* Probe timing from a values block (everything but `enabled`). */}}
{{- define "mqttd.probeSettings" -}}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
{{- if hasKey . "successThreshold" }}
successThreshold: {{ .successThreshold }}
{{- end }}
{{- end }}
