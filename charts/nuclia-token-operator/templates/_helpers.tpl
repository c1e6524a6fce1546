{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "nuclia-token-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart unless the release name already contains the chart name. */}}
{{- define "nuclia-token-operator.fullname" -}}
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

{{- define "nuclia-token-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels selecting the operator's pods. */}}
{{- define "nuclia-token-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nuclia-token-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "nuclia-token-operator.labels" -}}
helm.sh/chart: {{ include "nuclia-token-operator.chart" . }}
{{ include "nuclia-token-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "nuclia-token-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nuclia-token-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nuclia-token-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "nuclia-token-operator.leaseName" -}}
{{- default (include "nuclia-token-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
The rules the controllers need in each namespace they watch (a ClusterRole, or one Role per
watched namespace). See the README's RBAC section for why each is needed.
*/}}
{{- define "nuclia-token-operator.controllerRules" -}}
- apiGroups: ["nuclia.dev"]
  resources: ["nucliapersonaltokens", "nucliakbapikeys", "nuclianuakeys"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["nuclia.dev"]
  resources: ["nucliapersonaltokens/status", "nucliakbapikeys/status", "nuclianuakeys/status"]
  verbs: ["patch"]
- apiGroups: ["nuclia.dev"]
  resources: ["nucliapersonaltokens/finalizers", "nucliakbapikeys/finalizers", "nuclianuakeys/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.restartWorkloads }}
# spec.rolloutRestartTargets: a pod-template annotation, as `kubectl rollout restart` sets it.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["patch"]
{{- end }}
{{- end }}

{{/* Where caBundle is mounted; SSL_CERT_DIR names it beside the image's own roots. */}}
{{- define "nuclia-token-operator.caBundleDir" -}}
/etc/nuclia-token-operator/ca-bundle
{{- end }}

{{/*
The operator's settings as environment variables, NUCLIA_OPERATOR_ + the flag's name (see
`nuclia-token-operator --help`), then the proxy and CA variables. A name that extraEnv also sets
is left out, so extraEnv replaces the chart's value instead of repeating the variable.
*/}}
{{- define "nuclia-token-operator.env" -}}
{{- $v := .Values }}
{{- $p := "NUCLIA_OPERATOR_" }}
{{- $env := list }}
{{- $env = append $env (dict "name" (print $p "METRICS_ADDR") "value" (printf "0.0.0.0:%v" $v.metrics.port)) }}
{{- $env = append $env (dict "name" (print $p "NUCLIA_GLOBAL_URL") "value" $v.nuclia.globalUrl) }}
{{- $env = append $env (dict "name" (print $p "NUCLIA_REGIONAL_URL") "value" $v.nuclia.regionalUrl) }}
{{- if $v.nuclia.zoneOrigins }}
{{- $origins := list }}
{{- range $zone, $url := $v.nuclia.zoneOrigins }}
{{- $origins = append $origins (printf "%s=%s" $zone $url) }}
{{- end }}
{{- $env = append $env (dict "name" (print $p "NUCLIA_ZONE_ORIGIN") "value" (join "," $origins)) }}
{{- end }}
{{- $env = append $env (dict "name" (print $p "NUCLIA_TIMEOUT") "value" (toString $v.nuclia.timeout)) }}
{{- $env = append $env (dict "name" (print $p "NUCLIA_RPS") "value" (toString $v.nuclia.rps)) }}
{{- $env = append $env (dict "name" (print $p "NUCLIA_BURST") "value" (toString (int64 $v.nuclia.burst))) }}
{{- with $v.watchNamespaces }}
{{- $env = append $env (dict "name" (print $p "WATCH_NAMESPACES") "value" (join "," .)) }}
{{- end }}
{{- with $v.labelSelector }}
{{- $env = append $env (dict "name" (print $p "LABEL_SELECTOR") "value" .) }}
{{- end }}
{{- $env = append $env (dict "name" (print $p "CONCURRENCY") "value" (toString (int64 $v.concurrency))) }}
{{- $env = append $env (dict "name" (print $p "WORKER_THREADS") "value" (toString (int64 $v.workerThreads))) }}
{{- $env = append $env (dict "name" (print $p "VERIFY_INTERVAL") "value" (toString $v.verifyInterval)) }}
{{- $env = append $env (dict "name" (print $p "REVOKE_TIMEOUT") "value" (toString $v.revokeTimeout)) }}
{{- $env = append $env (dict "name" (print $p "MIN_ISSUE_INTERVAL") "value" (toString $v.minIssueInterval)) }}
{{- $env = append $env (dict "name" (print $p "REQUEUE_MAX") "value" (toString $v.requeueMax)) }}
{{- with $v.defaultRotationWindows }}
{{- $env = append $env (dict "name" (print $p "DEFAULT_ROTATION_WINDOWS") "value" (toJson .)) }}
{{- end }}
{{- $env = append $env (dict "name" (print $p "BACKOFF_BASE") "value" (toString $v.backoffBase)) }}
{{- $env = append $env (dict "name" (print $p "BACKOFF_MAX") "value" (toString $v.backoffMax)) }}
{{- with $v.clusterId }}
{{- $env = append $env (dict "name" (print $p "CLUSTER_ID") "value" .) }}
{{- end }}
{{- $env = append $env (dict "name" (print $p "LOG_FORMAT") "value" $v.logFormat) }}
{{- $env = append $env (dict "name" (print $p "LOG_LEVEL") "value" $v.logLevel) }}
{{- $env = append $env (dict "name" (print $p "LEADER_ELECT") "value" (toString $v.leaderElection.enabled)) }}
{{- $env = append $env (dict "name" (print $p "LEASE_NAME") "value" (include "nuclia-token-operator.leaseName" .)) }}
{{- $env = append $env (dict "name" (print $p "LEASE_DURATION") "value" (toString $v.leaderElection.leaseDuration)) }}
{{- $env = append $env (dict "name" (print $p "INSTALLATION_CONFIGMAP") "value" (printf "%s-installation" (include "nuclia-token-operator.fullname" .))) }}
{{- /* The Lease lives in the release namespace; each replica names itself after its pod. */}}
{{- $env = append $env (dict "name" (print $p "LEASE_NAMESPACE") "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.namespace"))) }}
{{- $env = append $env (dict "name" (print $p "CLUSTER_CREDENTIALS") "value" (toString $v.clusterCredentials.enabled)) }}
{{- if $v.clusterCredentials.enabled }}
{{- $env = append $env (dict "name" (print $p "CLUSTER_CREDENTIAL_NAMESPACE") "value" (include "nuclia-token-operator.clusterCredentialNamespace" .)) }}
{{- end }}
{{- $env = append $env (dict "name" (print $p "IDENTITY") "valueFrom" (dict "fieldRef" (dict "fieldPath" "metadata.name"))) }}
{{- if or $v.proxy.httpsProxy $v.proxy.httpProxy }}
{{- with $v.proxy.httpsProxy }}
{{- $env = append $env (dict "name" "HTTPS_PROXY" "value" .) }}
{{- end }}
{{- with $v.proxy.httpProxy }}
{{- $env = append $env (dict "name" "HTTP_PROXY" "value" .) }}
{{- end }}
{{- with $v.proxy.noProxy }}
{{- $env = append $env (dict "name" "NO_PROXY" "value" .) }}
{{- end }}
{{- end }}
{{- if or $v.caBundle.configMapName $v.caBundle.secretName }}
{{- $env = append $env (dict "name" "SSL_CERT_DIR" "value" (printf "%s:%s" $v.caBundle.systemCertsDir (include "nuclia-token-operator.caBundleDir" .))) }}
{{- end }}
{{- $mine := dict }}
{{- range $v.extraEnv }}
{{- $_ := set $mine .name true }}
{{- end }}
{{- $kept := list }}
{{- range $env }}
{{- if not (hasKey $mine .name) }}
{{- $kept = append $kept . }}
{{- end }}
{{- end }}
{{- toYaml $kept }}
{{- end }}

{{/* Where the Secrets of NucliaClusterCredentials live: clusterCredentials.namespace or the release namespace. */}}
{{- define "nuclia-token-operator.clusterCredentialNamespace" -}}
{{- default .Release.Namespace .Values.clusterCredentials.namespace -}}
{{- end }}
