package loginhistory

import "math"

// EarthRadiusKm is the mean Earth radius (IUGG) used by HaversineKm.
const EarthRadiusKm = 6371.0088

// HaversineKm is the great-circle distance in km between two points given
// in degrees, on a sphere of radius EarthRadiusKm (haversine formula; the
// error against the ellipsoid is under 0.5%).
func HaversineKm(lat1, lon1, lat2, lon2 float64) float64 {
	const rad = math.Pi / 180
	φ1, φ2 := lat1*rad, lat2*rad
	dφ, dλ := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dφ/2)*math.Sin(dφ/2) + math.Cos(φ1)*math.Cos(φ2)*math.Sin(dλ/2)*math.Sin(dλ/2)
	return 2 * EarthRadiusKm * math.Asin(math.Min(1, math.Sqrt(a)))
}

// CountryDistanceKm is the great-circle distance between the centroids of
// two countries; false when either has no centroid in the table.
func CountryDistanceKm(a, b string) (float64, bool) {
	ca, ok1 := centroids[a]
	cb, ok2 := centroids[b]
	if !ok1 || !ok2 {
		return 0, false
	}
	return HaversineKm(ca[0], ca[1], cb[0], cb[1]), true
}

// Centroid returns a country's centroid (latitude, longitude in degrees).
func Centroid(cc string) (lat, lon float64, ok bool) {
	c, ok := centroids[cc]
	return c[0], c[1], ok
}
