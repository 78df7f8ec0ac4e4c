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

{{/* MEDSERVE_<MODEL>_MODEL_URI of a service: the pinned version's archive under the store. */}}
{{- define "medserve.modelUri" -}}
{{- $tag := .service.modelTag -}}
{{- $parts := splitList ":" $tag -}}
{{- if ne (len $parts) 2 -}}
{{- fail (printf "services[%s].modelTag %q must be <name>:<version>" .service.name $tag) -}}
{{- end -}}
{{- $version := last $parts -}}
{{- if eq $version "latest" -}}
{{- fail (printf "services[%s].modelTag must pin a version when modelStore.uri is set (got %q): pods must not drift to whatever is newest" .service.name $tag) -}}
{{- end -}}
{{- printf "%s/%s/%s.bentomodel" (trimSuffix "/" .root.Values.modelStore.uri) (first $parts) $version -}}
{{- end -}}
