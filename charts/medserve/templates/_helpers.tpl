{{/* DNS-1035 name of a service entry: heart_risk -> heart-risk */}}
{{- define "medserve.serviceName" -}}
{{- printf "%s-%s" .root.Release.Name (.service.name | replace "_" "-") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "medserve.selectorLabels" -}}
app.kubernetes.io/name: medserve
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service.name | replace "_" "-" }}
{{- end -}}

{{- define "medserve.labels" -}}
{{ include "medserve.selectorLabels" . }}
app.kubernetes.io/part-of: medserve
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* Labels of release-wide objects (no component). */}}
{{- define "medserve.releaseLabels" -}}
app.kubernetes.io/name: medserve
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: medserve
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "medserve.serviceAccountName" -}}
{{- default (printf "%s-medserve" .Release.Name) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "medserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* One service entry with the chart-wide serviceDefaults merged under it. */}}
{{- define "medserve.serviceConfig" -}}
{{- $merged := mergeOverwrite (deepCopy .root.Values.serviceDefaults) (deepCopy .service) -}}
{{- toYaml $merged -}}
{{- end -}}

{{/* Name of the Secret holding the prediction-log URL, empty when there is none. */}}
{{- define "medserve.databaseSecretName" -}}
{{- if .Values.predictionLog.existingSecret -}}
{{- .Values.predictionLog.existingSecret -}}
{{- else if .Values.predictionLog.url -}}
{{- printf "%s-medserve-prediction-log" .Release.Name -}}
{{- end -}}
{{- end -}}

{{/*
MEDSERVE_<NAME>_MODEL_URI of one stored model a service loads (its own or a companion): the
pinned version's archive under the store. `.tag` is the pinned tag, `.what` names the value in
messages, `.root` is the chart root.
*/}}
{{- define "medserve.modelUri" -}}
{{- $tag := .tag -}}
{{- $parts := splitList ":" $tag -}}
{{- if ne (len $parts) 2 -}}
{{- fail (printf "%s %q must be <name>:<version>" .what $tag) -}}
{{- end -}}
{{- $version := last $parts -}}
{{- if eq $version "latest" -}}
{{- fail (printf "%s must pin a version when modelStore.uri is set (got %q): pods must not drift to whatever is newest" .what $tag) -}}
{{- end -}}
{{- printf "%s/%s/%s.bentomodel" (trimSuffix "/" .root.Values.modelStore.uri) (first $parts) $version -}}
{{- end -}}

{{/*
The stored models a service loads, as a list of {name, tag, what}: its own (modelTag) first,
then its companionModels by name. A companion's tag must name the model it is the key of: the
service reads MEDSERVE_<KEY>_MODEL_TAG for that model and would load another one.
*/}}
{{- define "medserve.storedModels" -}}
{{- $svc := .service -}}
{{- $models := list (dict "name" $svc.name "tag" $svc.modelTag "what" (printf "services[%s].modelTag" $svc.name)) -}}
{{- range $name, $tag := ($svc.companionModels | default dict) -}}
{{- $what := printf "services[%s].companionModels.%s" $svc.name $name -}}
{{- if ne (first (splitList ":" $tag)) $name -}}
{{- fail (printf "%s %q must be a tag of the model %s (<name>:<version>)" $what $tag $name) -}}
{{- end -}}
{{- $models = append $models (dict "name" $name "tag" $tag "what" $what) -}}
{{- end -}}
{{- toJson $models -}}
{{- end -}}

{{/*
Fail closed on an incomplete access-control configuration (values.schema.json refuses it too;
this names the fix when the schema is skipped). Included by every Deployment and NOTES.txt.
*/}}
{{- define "medserve.validateAuth" -}}
{{- $auth := .Values.auth -}}
{{- if not (has $auth.mode (list "oidc" "proxy")) -}}
{{- fail (printf "auth.mode must be oidc or proxy, not %q: local (a per-machine signing key) and off (tests only) are not for a cluster" $auth.mode) -}}
{{- end -}}
{{- if and (eq $auth.mode "oidc") (not (and $auth.issuer $auth.audience $auth.jwksUrl)) -}}
{{- fail "auth.mode oidc needs auth.issuer, auth.audience and auth.jwksUrl of the hospital's identity provider (README \"Helm chart\"); the chart has no default and fails closed rather than start pods without access control" -}}
{{- end -}}
{{- if and (eq $auth.mode "proxy") (not .Values.networkPolicy.enabled) -}}
{{- fail "auth.mode proxy needs networkPolicy.enabled: the proxy's identity headers can be forged by anyone who reaches a pod directly" -}}
{{- end -}}
{{- end -}}

{{/* Name of the Secret holding the CSRF key (an existing one, or the chart's). */}}
{{- define "medserve.csrfSecretName" -}}
{{- default (printf "%s-medserve-csrf" .Release.Name) .Values.auth.csrfSecret.existingSecret -}}
{{- end -}}

{{/*
MEDSERVE_ALLOWED_HOSTS of a service (JSON list): the DNS names of its Services (ClusterIP and
headless gRPC) in every form a client in the cluster may use, and auth.allowedHosts. Probes and
/metrics are not Host-checked (kubelet and Prometheus call them by pod IP).
*/}}
{{- define "medserve.allowedHosts" -}}
{{- $name := include "medserve.serviceName" . -}}
{{- $ns := .root.Release.Namespace -}}
{{- $hosts := list -}}
{{- range $service := list $name (printf "%s-grpc" $name) -}}
{{- $hosts = concat $hosts (list $service (printf "%s.%s" $service $ns) (printf "%s.%s.svc" $service $ns) (printf "%s.%s.svc.%s" $service $ns $.root.Values.clusterDomain)) -}}
{{- end -}}
{{- $hosts = concat $hosts .root.Values.auth.allowedHosts -}}
{{- toJson $hosts -}}
{{- end -}}
