{{/* DNS-1035 name of a service entry: heart_risk -> heart-risk */}}
{{- define "medserve.serviceName" -}}
{{- printf "%s-%s" .root.Release.Name (.service.name | replace "_" "-") | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "medserve.selectorLabels" -}}
app.kubernetes.io/name: medserve
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .service.name | replace "_" "-" }}
{{- end -}}
